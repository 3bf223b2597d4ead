//! PIN dispositivo (DOMAIN §4.4) over gRPC: the citizen's side (`PinConversionService`: the
//! request, its form, the upload and its automatic checks) and the back office's
//! (`PinConversionBackOfficeService`). The files stream straight into the blob store, limits
//! enforced as they arrive; the rules are in `domain::conversion`.

use crate::domain::codice_fiscale::CodiceFiscale;
use crate::domain::conversion::{
    self as rules, Document, DocumentCheck, DocumentType, Evidence, Failed, OnFile, SignedForm,
};
use crate::error::IdentityError;
use crate::store::{Conversion, Decision, Opened, Slot, Store, Uploaded};
use chrono::{Datelike, NaiveDate};
use futures::Stream;
use sportello_platform::auth::{principal, Claims, Level, Role};
use sportello_platform::blobs::{BlobError, BlobStore, BlobWriter, Stored};
use sportello_platform::error::FieldViolations;
use sportello_platform::probe::{ProbeError, Probed, Prober};
use sportello_platform::provider::{Provider, Verdict};
use sportello_proto::identity::v1 as wire;
use sportello_proto::identity::v1::pin_conversion_back_office_service_server::PinConversionBackOfficeService;
use sportello_proto::identity::v1::pin_conversion_service_server::PinConversionService;
use std::pin::Pin;
use std::sync::Arc;
use tokio::io::AsyncReadExt;
use tonic::{Request, Response, Status, Streaming};

/// Bytes per message when a file is sent back.
const CHUNK: usize = 64 * 1024;
/// An upload's bytes are counted against the citizen's quota in steps of this size: one write
/// per step, not per chunk.
const QUOTA_STEP: u64 = 4 * 1024 * 1024;
/// How long an upload waits for the notice of its request to leave for the citizen before it
/// gives up the instant path.
const NOTICE_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// How much an upload may carry, and how its files are read.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct UploadLimits {
    /// Each file, in bytes.
    pub max_file_bytes: u64,
    /// Both files together, in bytes.
    pub max_total_bytes: u64,
    /// A citizen's uploads in progress together, in bytes.
    pub max_bytes_per_citizen: u64,
    /// Wall-clock time a file may take to read.
    #[serde(with = "humantime_serde")]
    pub read_timeout: std::time::Duration,
    /// The program that reads files in a limited child process (`<program> file-probe`); by
    /// default the service's own executable.
    pub reader: Option<std::path::PathBuf>,
}

impl Default for UploadLimits {
    fn default() -> Self {
        Self {
            max_file_bytes: 24 * 1024 * 1024,
            max_total_bytes: 32 * 1024 * 1024,
            max_bytes_per_citizen: 64 * 1024 * 1024,
            read_timeout: std::time::Duration::from_secs(5),
            reader: None,
        }
    }
}

impl UploadLimits {
    pub fn prober(&self) -> std::io::Result<Prober> {
        match &self.reader {
            Some(program) => Ok(Prober::new(program.clone(), self.read_timeout)),
            None => Prober::current_exe(self.read_timeout),
        }
    }
}

#[derive(Clone)]
pub struct Conversions {
    pub store: Store,
    pub blobs: Arc<dyn BlobStore>,
    pub limits: UploadLimits,
    pub prober: Prober,
    /// The identity-document registry, when one is configured.
    pub registry: Option<Provider>,
    pub notices_per_hour: u32,
}

/// The question the identity-document registry answers.
#[derive(serde::Serialize)]
struct DocumentQuestion<'a> {
    document_type: &'static str,
    number: &'a str,
    issuer: &'a str,
    holder_fiscal_code: &'a str,
    surname: &'a str,
    given_name: &'a str,
    /// YYYY-MM-DD
    birth_date: String,
}

fn today() -> NaiveDate {
    chrono::Utc::now().date_naive()
}

fn timestamp(millis: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: millis.div_euclid(1000),
        nanos: (millis.rem_euclid(1000) * 1_000_000) as i32,
    }
}

fn wire_status(s: rules::Status) -> wire::PinConversionStatus {
    match s {
        rules::Status::AwaitingDocuments => wire::PinConversionStatus::AwaitingDocuments,
        rules::Status::InReview => wire::PinConversionStatus::InReview,
        rules::Status::Approved => wire::PinConversionStatus::Approved,
        rules::Status::Rejected => wire::PinConversionStatus::Rejected,
        rules::Status::Withdrawn => wire::PinConversionStatus::Withdrawn,
        rules::Status::Revoked => wire::PinConversionStatus::Revoked,
    }
}

/// The request as its citizen sees it; the back office also sees whose it is.
fn to_wire(c: &Conversion, staff: bool) -> wire::PinConversion {
    wire::PinConversion {
        request_id: c.id.clone(),
        request_number: c.request_number.clone(),
        status: wire_status(c.status) as i32,
        failed_checks: c.failed_checks.clone(),
        rejection_reason: c.rejection_reason.clone(),
        guardian_fiscal_code: c
            .guardian_fiscal_code
            .as_deref()
            .map(sportello_platform::mask::fiscal_code)
            .unwrap_or_default(),
        requested_at: Some(timestamp(c.requested_at)),
        decided_at: c.decided_at.map(timestamp),
        fiscal_code: if staff { c.fiscal_code.clone() } else { String::new() },
    }
}

/// The citizen asking, with an ordinary PIN at least.
fn citizen<T>(request: &Request<T>) -> Result<Claims, Status> {
    let p = principal(request)?;
    if p.role != Role::Citizen {
        return Err(Status::permission_denied("for citizens only"));
    }
    if p.level < Level::Ordinary {
        return Err(IdentityError::Forbidden {
            reason: "LEVEL_TOO_LOW",
            message: "the conversion needs at least an ordinary PIN (ORDINARY)",
        }
        .into());
    }
    Ok(p)
}

fn backoffice<T>(request: &Request<T>) -> Result<Claims, Status> {
    let p = principal(request)?;
    if p.role != Role::Backoffice {
        return Err(Status::permission_denied("for the back office only"));
    }
    Ok(p)
}

fn request_id(raw: &str) -> Result<String, IdentityError> {
    match uuid::Uuid::parse_str(raw.trim()) {
        Ok(id) => Ok(id.to_string()),
        Err(_) => {
            let mut v = FieldViolations::new();
            v.add("request_id", "not a request id");
            Err(v.into())
        }
    }
}

fn date(d: Option<&wire::Date>) -> Option<NaiveDate> {
    let d = d?;
    NaiveDate::from_ymd_opt(d.year, u32::try_from(d.month).ok()?, u32::try_from(d.day).ok()?)
}

/// The document as described, parsed; paths as in `UploadMetadata`.
fn parse_document(d: Option<&wire::IdentityDocument>) -> Result<Document, FieldViolations> {
    let mut v = FieldViolations::new();
    let Some(d) = d else {
        v.add("metadata.document", "describe the identity document");
        return Err(v);
    };
    let kind = match wire::IdentityDocumentType::try_from(d.r#type) {
        Ok(wire::IdentityDocumentType::CartaIdentita) => Some(DocumentType::CartaIdentita),
        Ok(wire::IdentityDocumentType::Patente) => Some(DocumentType::Patente),
        Ok(wire::IdentityDocumentType::Passaporto) => Some(DocumentType::Passaporto),
        _ => {
            v.add("metadata.document.type", "carta d'identità, patente or passaporto");
            None
        }
    };
    let mut text = |field: &str, value: &str| {
        let value = value.trim();
        if value.is_empty() || value.chars().count() > 100 {
            v.add(format!("metadata.document.{field}"), "required, at most 100 characters");
        } else if value.chars().any(char::is_control) {
            v.add(format!("metadata.document.{field}"), "control characters are not allowed");
        }
        value.to_owned()
    };
    let number = text("number", &d.number);
    let issuer = text("issuer", &d.issuer);
    let holder_surname = text("holder_surname", &d.holder_surname);
    let holder_given_name = text("holder_given_name", &d.holder_given_name);
    let mut day = |field: &str, value: Option<&wire::Date>| {
        // Years a document or its holder can have: anything else is a typing error, and would
        // not print or store the same everywhere.
        let parsed = date(value).filter(|d| (1900..=2200).contains(&d.year()));
        if parsed.is_none() {
            v.add(format!("metadata.document.{field}"), "a calendar date between 1900 and 2200");
        }
        parsed
    };
    let issued_on = day("issued_on", d.issued_on.as_ref());
    let expires_on = day("expires_on", d.expires_on.as_ref());
    let holder_birth_date = day("holder_birth_date", d.holder_birth_date.as_ref());
    match (kind, issued_on, expires_on, holder_birth_date) {
        (Some(kind), Some(issued_on), Some(expires_on), Some(holder_birth_date))
            if v.is_empty() =>
        {
            Ok(Document {
                kind,
                number,
                issuer,
                issued_on,
                expires_on,
                holder_surname,
                holder_given_name,
                holder_birth_date,
            })
        }
        _ => Err(v),
    }
}

/// A file refused while it streamed, reported against it.
fn refused(file: wire::ConversionFile, e: BlobError) -> IdentityError {
    let name = file.as_str_name();
    let mut v = FieldViolations::new();
    match e {
        BlobError::TooLarge { limit } => {
            v.add("chunk.data", format!("{name} is larger than {limit} bytes"))
        }
        BlobError::UnacceptedType => {
            v.add("chunk.data", format!("{name} is not a PDF, JPEG or PNG file"))
        }
        other => return IdentityError::Internal(format!("blob store: {other}")),
    }
    IdentityError::Invalid(v)
}

/// How long an upload may stay in progress before it counts as a dead process's leftover: far
/// longer than an upload may take (the gateway caps deadlines at seconds).
const STALE_UPLOAD: std::time::Duration = std::time::Duration::from_secs(3600);

/// Ends the uploads a dead process left in progress, and deletes the files nothing names: those
/// uploads' files, and files whose deletion a crash interrupted. Uploads that fail or are
/// withdrawn delete their files at once; this is the backstop. Every ten minutes.
pub async fn sweep_orphans(
    store: Store,
    blobs: sportello_platform::blobs::FsBlobs,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(600));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match sweep_once(&store, &blobs, STALE_UPLOAD).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(files = n, "unreferenced upload files removed"),
            Err(e) => tracing::warn!(error = %e, "sweep of unreferenced upload files failed"),
        }
    }
}

/// One sweep: uploads in progress for longer than `stale` are ended; then every stored file
/// that no upload in progress and no request names is deleted. How many files went.
pub async fn sweep_once(
    store: &Store,
    blobs: &sportello_platform::blobs::FsBlobs,
    stale: std::time::Duration,
) -> anyhow::Result<usize> {
    let before = sportello_platform::now_millis() - stale.as_millis() as i64;
    for id in store.stale_uploads(before).await? {
        store.abandon_upload(&id).await?;
    }
    let mut n = 0;
    for digest in blobs.stored_before(std::time::Duration::ZERO).await? {
        if store.delete_if_unreferenced(&digest, blobs).await? {
            n += 1;
        }
    }
    Ok(n)
}

/// An upload in progress: its row counts its bytes and names its files. Dropped without
/// [`Upload::recorded`] — a refusal, an error, the client gone — it ends the upload and deletes
/// the files nothing else names, in a task of its own (a dropped handler runs no more awaits).
struct Upload {
    id: String,
    fiscal_code: String,
    counted: u64,
    store: Store,
    blobs: Arc<dyn BlobStore>,
    done: bool,
}

impl Upload {
    async fn begin(c: &Conversions, fiscal_code: &str) -> Result<Self, IdentityError> {
        let id = c.store.begin_upload(fiscal_code).await?;
        Ok(Self {
            id,
            fiscal_code: fiscal_code.to_owned(),
            counted: 0,
            store: c.store.clone(),
            blobs: c.blobs.clone(),
            done: false,
        })
    }

    /// Counts the upload as `total` bytes so far, within the citizen's quota.
    async fn count(&mut self, total: u64, quota: u64) -> Result<(), IdentityError> {
        while total > self.counted {
            let step = QUOTA_STEP as i64;
            let quota = i64::try_from(quota).unwrap_or(i64::MAX);
            if !self.store.grow_upload(&self.id, &self.fiscal_code, step, quota).await? {
                return Err(IdentityError::Exhausted {
                    reason: "UPLOAD_QUOTA_EXCEEDED",
                    message: "your uploads in progress exceed what one citizen may send at once; \
                              retry when they are done",
                });
            }
            self.counted += QUOTA_STEP;
        }
        Ok(())
    }

    /// Stores a complete file under its name, claimed by this upload first.
    async fn keep(&self, slot: Slot, writer: BlobWriter) -> Result<Stored, BlobError> {
        let sealed = writer.seal()?;
        let claimed = self.store.claim_file(&self.id, slot, &sealed.stored.digest).await;
        match claimed {
            Ok(true) => sealed.place().await,
            Ok(false) => Err(BlobError::Io(std::io::Error::other("the upload was swept"))),
            Err(e) => Err(BlobError::Io(std::io::Error::other(e))),
        }
    }

    /// The request names the files now.
    fn recorded(mut self) {
        self.done = true;
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let (store, blobs, id) = (self.store.clone(), self.blobs.clone(), self.id.clone());
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        runtime.spawn(async move {
            let ended: anyhow::Result<()> = async {
                for digest in store.abandon_upload(&id).await? {
                    store.delete_if_unreferenced(&digest, blobs.as_ref()).await?;
                }
                Ok(())
            }
            .await;
            if let Err(e) = ended {
                tracing::warn!(error = %e, "an abandoned upload's files were not removed");
            }
        });
    }
}

fn stream_of<T: Send + 'static>(
    items: impl Stream<Item = Result<T, Status>> + Send + 'static,
) -> Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>> {
    Box::pin(items)
}

/// The audit row of a staff read of a citizen's file, written when the read ends — OK once every
/// byte was sent, FAILED when the file could not be read, INCOMPLETE when the caller went away
/// first — in a task of its own, since the stream may be dropped anywhere.
struct ReadAudit {
    store: Store,
    operator: String,
    fiscal_code: String,
    detail: String,
    outcome: &'static str,
}

impl ReadAudit {
    /// How the read ended, written when the audit is dropped.
    fn ended(&mut self, outcome: &'static str) {
        self.outcome = outcome;
    }

    fn write(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (store, operator, cf) =
            (self.store.clone(), self.operator.clone(), self.fiscal_code.clone());
        let (detail, outcome) = (self.detail.clone(), self.outcome);
        async move {
            let entry = crate::store::Entry {
                operator_id: &operator,
                action: "DownloadConversionFile",
                fiscal_code: &cf,
                outcome,
                detail: &detail,
            };
            if let Err(e) = store.audit(&entry).await {
                tracing::error!(error = %e, "the audit row of a file read was not written");
            }
        }
    }
}

impl Drop for ReadAudit {
    fn drop(&mut self) {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(self.write());
        }
    }
}

/// The blob `digest` in messages of [`CHUNK`] bytes, read as they are sent; `wrap` makes a
/// message of a chunk (and knows the first). `audit` records how the read ended.
async fn chunks<T: Send + 'static>(
    blobs: &Arc<dyn BlobStore>,
    digest: &str,
    mut audit: ReadAudit,
    wrap: impl Fn(Vec<u8>, bool) -> T + Send + 'static,
) -> Result<Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>, IdentityError> {
    let reader = match blobs.open(digest).await {
        Ok(reader) => reader,
        Err(e) => {
            audit.ended("FAILED");
            return Err(match e {
                BlobError::NotFound => IdentityError::NotFound("file"),
                e => IdentityError::Internal(format!("blob store: {e}")),
            });
        }
    };
    audit.ended("INCOMPLETE");
    let state = (reader, true, wrap, audit);
    let messages =
        futures::stream::unfold(state, |(mut reader, first, wrap, mut audit)| async move {
            let mut buf = vec![0u8; CHUNK];
            match reader.read(&mut buf).await {
                Ok(0) => {
                    audit.ended("OK");
                    None
                }
                Ok(n) => {
                    buf.truncate(n);
                    let message = wrap(buf, first);
                    Some((Ok(message), (reader, false, wrap, audit)))
                }
                Err(_) => {
                    audit.ended("FAILED");
                    Some((
                        Err(Status::unavailable("file unreadable; retry")),
                        (reader, false, wrap, audit),
                    ))
                }
            }
        });
    Ok(stream_of(messages))
}

impl Conversions {
    /// The citizen's birth date: the register's, else the one the fiscal code carries.
    async fn birth_date(&self, fiscal_code: &str) -> Result<NaiveDate, IdentityError> {
        if let Some(r) = self.store.resident(fiscal_code).await? {
            return Ok(r.personal_data.birth_date);
        }
        CodiceFiscale::parse(fiscal_code, today())
            .map(|cf| cf.birth_date())
            .map_err(|e| IdentityError::Internal(format!("a session's fiscal code: {e}")))
    }

    /// The citizen's request `id`; NOT_FOUND for anyone else's.
    async fn own(&self, p: &Claims, id: &str) -> Result<Conversion, IdentityError> {
        let id = request_id(id)?;
        match self.store.conversion(&id).await? {
            Some(c) if c.fiscal_code == p.sub => Ok(c),
            _ => Err(IdentityError::NotFound("conversion request")),
        }
    }

    async fn on_file(&self, fiscal_code: &str) -> Result<Option<OnFile>, IdentityError> {
        Ok(self.store.resident(fiscal_code).await?.map(|r| OnFile {
            surname: r.personal_data.surname,
            given_name: r.personal_data.given_name,
            birth_date: r.personal_data.birth_date,
        }))
    }

    /// The request's form as it is downloaded, printing `on_file` (the citizen's anagrafica on
    /// the register): the same bytes every time.
    fn form_of(c: &Conversion, on_file: Option<&OnFile>) -> Vec<u8> {
        let date = chrono::DateTime::from_timestamp_millis(c.requested_at)
            .unwrap_or_default()
            .format("%d/%m/%Y")
            .to_string();
        rules::form_pdf(&rules::Form {
            request_number: &c.request_number,
            fiscal_code: &c.fiscal_code,
            on_file,
            guardian_fiscal_code: c.guardian_fiscal_code.as_deref(),
            date: &date,
        })
    }

    /// Streams the upload's files into the blob store, each claimed by `upload` before it is
    /// placed: (signed form, document scan).
    async fn receive(
        &self,
        stream: &mut Streaming<wire::UploadConversionDocumentsRequest>,
        upload: &mut Upload,
    ) -> Result<(Stored, Stored), IdentityError> {
        let mut current: Option<(wire::ConversionFile, BlobWriter)> = None;
        let (mut form, mut scan) = (None, None);
        let mut total = 0u64;
        while let Some(message) = stream.message().await.map_err(|s| {
            // A message over the size limit, a client gone: the transport's own answer.
            tracing::info!(code = ?s.code(), "upload stream ended badly");
            IdentityError::Stream(s)
        })? {
            let Some(wire::upload_conversion_documents_request::Part::Chunk(chunk)) = message.part
            else {
                let mut v = FieldViolations::new();
                v.add("metadata", "only the first message carries the metadata");
                return Err(v.into());
            };
            let file = wire::ConversionFile::try_from(chunk.file)
                .ok()
                .filter(|f| *f != wire::ConversionFile::Unspecified);
            let Some(file) = file else {
                let mut v = FieldViolations::new();
                v.add("chunk.file", "SIGNED_FORM or IDENTITY_DOCUMENT");
                return Err(v.into());
            };
            total += chunk.data.len() as u64;
            if total > self.limits.max_total_bytes {
                let mut v = FieldViolations::new();
                v.add(
                    "chunk.data",
                    format!("the files exceed {} bytes together", self.limits.max_total_bytes),
                );
                return Err(v.into());
            }
            upload.count(total, self.limits.max_bytes_per_citizen).await?;
            if current.as_ref().is_some_and(|(f, _)| *f != file) {
                let (done, writer) = current.take().expect("a file in progress");
                let stored = keep(upload, done, writer).await?;
                match done {
                    wire::ConversionFile::SignedForm => form = Some(stored),
                    _ => scan = Some(stored),
                }
            }
            if current.is_none() {
                let already = match file {
                    wire::ConversionFile::SignedForm => form.is_some(),
                    _ => scan.is_some(),
                };
                if already {
                    let mut v = FieldViolations::new();
                    v.add("chunk.file", "send each file's chunks together");
                    return Err(v.into());
                }
                let writer = self
                    .blobs
                    .begin(self.limits.max_file_bytes)
                    .await
                    .map_err(|e| IdentityError::Internal(format!("blob store: {e}")))?;
                current = Some((file, writer));
            }
            let (_, writer) = current.as_mut().expect("a file in progress");
            writer.write(&chunk.data).await.map_err(|e| refused(file, e))?;
        }
        if let Some((done, writer)) = current.take() {
            let stored = keep(upload, done, writer).await?;
            match done {
                wire::ConversionFile::SignedForm => form = Some(stored),
                _ => scan = Some(stored),
            }
        }
        let mut v = FieldViolations::new();
        if form.is_none() {
            v.add("chunk.file", "the signed form (SIGNED_FORM) is missing");
        }
        if scan.is_none() {
            v.add("chunk.file", "the identity document (IDENTITY_DOCUMENT) is missing");
        }
        match (form, scan) {
            (Some(form), Some(scan)) => Ok((form, scan)),
            _ => Err(v.into()),
        }
    }

    /// What a stored file really is, read by a limited child process; `None` when the reader
    /// could not run (a person then looks at the file). A file that cannot be read as what it
    /// claims to be is refused, naming it.
    async fn read(
        &self,
        file: wire::ConversionFile,
        stored: &Stored,
    ) -> Result<Option<Probed>, IdentityError> {
        let local = self.blobs.local_path(&stored.digest).and_then(|p| std::fs::File::open(p).ok());
        let probed = match local {
            // The child reads the stored file itself: no byte of it passes through here.
            Some(file) => self.prober.probe_file(file).await,
            None => {
                let content = self
                    .blobs
                    .open(&stored.digest)
                    .await
                    .map_err(|e| IdentityError::Internal(format!("blob store: {e}")))?;
                self.prober.probe(content).await
            }
        };
        match probed {
            Ok(probed) => Ok(Some(probed)),
            Err(ProbeError::Unreadable(why)) => {
                let mut v = FieldViolations::new();
                v.add("chunk.data", format!("{} cannot be read: {why}", file.as_str_name()));
                Err(IdentityError::Unreadable(v))
            }
            Err(ProbeError::Unavailable(why)) => {
                tracing::warn!(%why, "an uploaded file could not be read; a person will");
                Ok(None)
            }
            Err(ProbeError::Busy) => Err(IdentityError::Exhausted {
                reason: "READERS_BUSY",
                message: "too many files are being read; retry shortly",
            }),
        }
    }

    /// The identity-document registry's verdict on `document` as `holder`'s.
    async fn registry_check(&self, document: &Document, holder: &str) -> DocumentCheck {
        let Some(registry) = &self.registry else { return DocumentCheck::Unavailable };
        let question = DocumentQuestion {
            document_type: document.kind.as_str(),
            number: &document.number,
            issuer: &document.issuer,
            holder_fiscal_code: holder,
            surname: &document.holder_surname,
            given_name: &document.holder_given_name,
            birth_date: document.holder_birth_date.format("%Y-%m-%d").to_string(),
        };
        match registry.ask(&question).await {
            Ok(Verdict::Match) => DocumentCheck::Match,
            Ok(Verdict::NoMatch) => DocumentCheck::NoMatch,
            Ok(Verdict::Unknown) => DocumentCheck::Unknown,
            Err(e) => {
                tracing::warn!(error = %e, "the identity-document registry did not answer");
                DocumentCheck::Unavailable
            }
        }
    }

    /// Whether the notice of the request has left for the citizen, waiting a little for the relay.
    async fn start_notice_sent(&self, fiscal_code: &str) -> Result<bool, IdentityError> {
        let deadline = tokio::time::Instant::now() + NOTICE_WAIT;
        while self.store.start_notice_pending(fiscal_code).await? {
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Ok(true)
    }
}

/// Stores a complete file of `upload`, refused against the file on failure.
async fn keep(
    upload: &Upload,
    file: wire::ConversionFile,
    writer: BlobWriter,
) -> Result<Stored, IdentityError> {
    let slot = match file {
        wire::ConversionFile::SignedForm => Slot::Form,
        _ => Slot::Scan,
    };
    upload.keep(slot, writer).await.map_err(|e| refused(file, e))
}

/// The content digest of a PDF read, if it is one.
fn pdf_content(probed: Option<&Probed>) -> Option<&str> {
    match probed {
        Some(Probed::Pdf { content_digest, .. }) => Some(content_digest),
        _ => None,
    }
}

type ChunkStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl PinConversionService for Conversions {
    async fn start_pin_conversion(
        &self,
        request: Request<wire::StartPinConversionRequest>,
    ) -> Result<Response<wire::StartPinConversionResponse>, Status> {
        let p = citizen(&request)?;
        let raw = request.into_inner().guardian_fiscal_code;
        let guardian = match raw.trim() {
            "" => None,
            given => match CodiceFiscale::parse(given, today()) {
                Ok(cf) if cf.canonical() != p.sub => Some(cf.canonical()),
                Ok(_) => {
                    let mut v = FieldViolations::new();
                    v.add("guardian_fiscal_code", "the guardian is someone else");
                    return Err(IdentityError::Invalid(v).into());
                }
                Err(e) => {
                    let mut v = FieldViolations::new();
                    v.add("guardian_fiscal_code", e.to_string());
                    return Err(IdentityError::Invalid(v).into());
                }
            },
        };
        let credential = self.store.credential(&p.sub).await.map_err(IdentityError::from)?;
        if credential.as_ref().is_some_and(|c| c.dispositive) {
            return Err(IdentityError::Precondition {
                reason: "ALREADY_DISPOSITIVE",
                message: "the PIN is already a PIN dispositivo",
            }
            .into());
        }
        if guardian.is_none() && rules::is_minor(self.birth_date(&p.sub).await?, today()) {
            return Err(IdentityError::Precondition {
                reason: "GUARDIAN_REQUIRED",
                message: "a minor's conversion is asked for by a parent or guardian: give \
                          guardian_fiscal_code",
            }
            .into());
        }
        let opened = self.store.open_conversion(
            &p.sub,
            guardian.as_deref(),
            today().year(),
            self.notices_per_hour,
        );
        let conversion = match opened.await.map_err(IdentityError::from)? {
            Opened::Opened(c) => c,
            Opened::AlreadyOpen => {
                return Err(IdentityError::Precondition {
                    reason: "ALREADY_PENDING",
                    message: "a conversion request is already open: withdraw it or wait for it",
                }
                .into())
            }
            Opened::NoticesUsedUp => {
                return Err(IdentityError::Exhausted {
                    reason: "TOO_MANY_NOTICES",
                    message: "too many notices to this citizen's contacts this hour; retry later",
                }
                .into())
            }
        };
        Ok(Response::new(wire::StartPinConversionResponse {
            conversion: Some(to_wire(&conversion, false)),
        }))
    }

    type DownloadConversionFormStream = ChunkStream<wire::DownloadConversionFormResponse>;

    async fn download_conversion_form(
        &self,
        request: Request<wire::DownloadConversionFormRequest>,
    ) -> Result<Response<Self::DownloadConversionFormStream>, Status> {
        let p = citizen(&request)?;
        let c = self.own(&p, &request.get_ref().request_id).await?;
        let on_file = self.on_file(&c.fiscal_code).await?;
        let pdf = Self::form_of(&c, on_file.as_ref());
        let messages: Vec<Result<_, Status>> = pdf
            .chunks(CHUNK)
            .map(|c| Ok(wire::DownloadConversionFormResponse { chunk: c.to_vec() }))
            .collect();
        Ok(Response::new(stream_of(futures::stream::iter(messages))))
    }

    async fn upload_conversion_documents(
        &self,
        request: Request<Streaming<wire::UploadConversionDocumentsRequest>>,
    ) -> Result<Response<wire::UploadConversionDocumentsResponse>, Status> {
        let p = citizen(&request)?;
        let mut stream = request.into_inner();
        let first = stream.message().await?.and_then(|m| m.part);
        let Some(wire::upload_conversion_documents_request::Part::Metadata(meta)) = first else {
            let mut v = FieldViolations::new();
            v.add("metadata", "the first message carries the metadata");
            return Err(IdentityError::Invalid(v).into());
        };
        let document = parse_document(meta.document.as_ref()).map_err(IdentityError::Invalid)?;
        let c = self.own(&p, &meta.request_id).await?;
        if c.status != rules::Status::AwaitingDocuments {
            return Err(IdentityError::Precondition {
                reason: "NOT_AWAITING_DOCUMENTS",
                message: "this request is not waiting for documents",
            }
            .into());
        }
        let mut upload = Upload::begin(self, &p.sub).await?;
        let (form, scan) = self.receive(&mut stream, &mut upload).await?;
        let form_read = self.read(wire::ConversionFile::SignedForm, &form).await?;
        let scan_read = self.read(wire::ConversionFile::IdentityDocument, &scan).await?;
        let on_file = self.on_file(&c.fiscal_code).await?;
        // The form as downloaded, read in-process: the service printed it itself.
        let printed = Self::form_of(&c, on_file.as_ref());
        let printed = sportello_platform::probe::probe(&printed, &Default::default()).ok();
        let printed = pdf_content(printed.as_ref()).map(str::to_owned);
        // Fails closed: a printed form that cannot be read itself counts as the same pages.
        let same_pages = |read: Option<&Probed>| match (&printed, pdf_content(read)) {
            (Some(printed), Some(read)) => printed == read,
            (None, Some(_)) => true,
            (_, None) => false,
        };
        let form_evidence = match &form_read {
            Some(Probed::Pdf { text, .. }) => {
                SignedForm::Pdf { text, as_downloaded: same_pages(form_read.as_ref()) }
            }
            _ => SignedForm::Image,
        };
        let evidence = Evidence {
            document: &document,
            on_file: on_file.as_ref(),
            form: form_evidence,
            request_number: &c.request_number,
            guardian: c.guardian_fiscal_code.is_some(),
            // The same file, the printed form's pages, or the uploaded form's pages again.
            scan_is_form: form.digest == scan.digest
                || same_pages(scan_read.as_ref())
                || pdf_content(scan_read.as_ref())
                    .is_some_and(|s| pdf_content(form_read.as_ref()) == Some(s)),
        };
        let mut failed = rules::automatic_checks(&evidence, today());
        if form_read.is_none() || scan_read.is_none() {
            failed.push(Failed::FileNotRead);
        }
        if matches!(scan_read, Some(Probed::Pdf { has_images: false, .. })) {
            failed.push(Failed::ScanWithoutImage);
        }
        if self.store.conversion_revoked(&c.fiscal_code).await.map_err(IdentityError::from)? {
            failed.push(Failed::PreviouslyRevoked);
        }
        let holder = c.guardian_fiscal_code.as_deref().unwrap_or(&c.fiscal_code);
        let check = self.registry_check(&document, holder).await;
        if check == DocumentCheck::Match && !self.start_notice_sent(&c.fiscal_code).await? {
            failed.push(Failed::NoticePending);
        }
        let outcome = rules::outcome(failed, check);
        let uploaded = Uploaded {
            upload_id: &upload.id,
            document: &document,
            signed_form: (&form.digest, form.kind.mime()),
            scan: (&scan.digest, scan.kind.mime()),
            outcome: &outcome,
            document_check: check,
            guardian: c.guardian_fiscal_code.is_some(),
        };
        if !self.store.record_upload(&c.id, &uploaded).await.map_err(IdentityError::from)? {
            return Err(IdentityError::Precondition {
                reason: "NOT_AWAITING_DOCUMENTS",
                message: "this request is not waiting for documents",
            }
            .into());
        }
        upload.recorded();
        let c = self.own(&p, &c.id).await?;
        Ok(Response::new(wire::UploadConversionDocumentsResponse {
            conversion: Some(to_wire(&c, false)),
        }))
    }

    async fn get_pin_conversion(
        &self,
        request: Request<wire::GetPinConversionRequest>,
    ) -> Result<Response<wire::GetPinConversionResponse>, Status> {
        let p = citizen(&request)?;
        let c = self.store.latest_conversion(&p.sub).await.map_err(IdentityError::from)?;
        let c = c.ok_or(IdentityError::NotFound("conversion request"))?;
        Ok(Response::new(wire::GetPinConversionResponse { conversion: Some(to_wire(&c, false)) }))
    }

    async fn withdraw_pin_conversion(
        &self,
        request: Request<wire::WithdrawPinConversionRequest>,
    ) -> Result<Response<wire::WithdrawPinConversionResponse>, Status> {
        let p = citizen(&request)?;
        let c = self.own(&p, &request.get_ref().request_id).await?;
        let withdrawn = self.store.withdraw_conversion(&c.id, &p.sub).await;
        let Some(files) = withdrawn.map_err(IdentityError::from)? else {
            return Err(IdentityError::Precondition {
                reason: "ALREADY_DECIDED",
                message: "this request is decided or withdrawn already",
            }
            .into());
        };
        // Withdrawn files go at once, unless another request has the same content.
        for digest in files {
            if let Err(e) = self.store.delete_if_unreferenced(&digest, self.blobs.as_ref()).await {
                tracing::warn!(error = %e, "a withdrawn request's file stays for the sweep");
            }
        }
        let c = self.own(&p, &c.id).await?;
        Ok(Response::new(wire::WithdrawPinConversionResponse {
            conversion: Some(to_wire(&c, false)),
        }))
    }
}

/// A page token: the last listed request's upload time and id.
fn page_after(token: &str) -> Result<Option<(i64, String)>, IdentityError> {
    if token.is_empty() {
        return Ok(None);
    }
    token
        .split_once(':')
        .and_then(|(at, id)| Some((at.parse().ok()?, id.to_owned())))
        .map(Some)
        .ok_or_else(|| {
            let mut v = FieldViolations::new();
            v.add("page_token", "not a page token of this list");
            IdentityError::Invalid(v)
        })
}

#[tonic::async_trait]
impl PinConversionBackOfficeService for Conversions {
    async fn list_pending_conversions(
        &self,
        request: Request<wire::ListPendingConversionsRequest>,
    ) -> Result<Response<wire::ListPendingConversionsResponse>, Status> {
        let staff = backoffice(&request)?;
        let req = request.into_inner();
        let size = match req.page_size {
            n if n <= 0 => 20,
            n => i64::from(n.min(100)),
        };
        let after = page_after(&req.page_token)?;
        let page =
            self.store.pending_conversions(after, size).await.map_err(IdentityError::from)?;
        let next_page_token = match page.last() {
            Some(last) if page.len() as i64 == size => {
                format!("{}:{}", last.uploaded_at.unwrap_or_default(), last.id)
            }
            _ => String::new(),
        };
        // The list shows fiscal codes: a staff read on the record, one row per citizen shown.
        for c in &page {
            let detail = format!("request {} in the review queue", c.request_number);
            let entry = crate::store::Entry {
                operator_id: &staff.sub,
                action: "ListPendingConversions",
                fiscal_code: &c.fiscal_code,
                outcome: "OK",
                detail: &detail,
            };
            self.store.audit(&entry).await.map_err(IdentityError::from)?;
        }
        Ok(Response::new(wire::ListPendingConversionsResponse {
            conversions: page.iter().map(|c| to_wire(c, true)).collect(),
            next_page_token,
        }))
    }

    type DownloadConversionFileStream = ChunkStream<wire::DownloadConversionFileResponse>;

    async fn download_conversion_file(
        &self,
        request: Request<wire::DownloadConversionFileRequest>,
    ) -> Result<Response<Self::DownloadConversionFileStream>, Status> {
        let staff = backoffice(&request)?;
        let req = request.into_inner();
        let id = request_id(&req.request_id)?;
        let c = self.store.conversion(&id).await.map_err(IdentityError::from)?;
        let c = c.ok_or(IdentityError::NotFound("conversion request"))?;
        let which = wire::ConversionFile::try_from(req.file).unwrap_or_default();
        let file = match which {
            wire::ConversionFile::SignedForm => c.signed_form.clone(),
            wire::ConversionFile::IdentityDocument => c.scan.clone(),
            wire::ConversionFile::Unspecified => {
                let mut v = FieldViolations::new();
                v.add("file", "SIGNED_FORM or IDENTITY_DOCUMENT");
                return Err(IdentityError::Invalid(v).into());
            }
        };
        let (digest, content_type) = file.ok_or(IdentityError::NotFound("file"))?;
        // A staff read of a citizen's documents is on the record, with how it ended.
        let audit = ReadAudit {
            store: self.store.clone(),
            operator: staff.sub.clone(),
            fiscal_code: c.fiscal_code.clone(),
            detail: format!("request {} {}", c.request_number, which.as_str_name()),
            outcome: "STARTED",
        };
        // On the record before the first byte leaves; how the read ended follows.
        audit.write().await;
        let stream = chunks(&self.blobs, &digest, audit, move |chunk, first| {
            wire::DownloadConversionFileResponse {
                content_type: if first { content_type.clone() } else { String::new() },
                chunk,
            }
        });
        Ok(Response::new(stream.await?))
    }

    async fn approve_conversion(
        &self,
        request: Request<wire::ApproveConversionRequest>,
    ) -> Result<Response<wire::ApproveConversionResponse>, Status> {
        let staff = backoffice(&request)?;
        let id = request_id(&request.get_ref().request_id)?;
        let decision = Decision { by: Some(&staff.sub), approve: true, reason: "" };
        let c = self.decide(&id, &decision).await?;
        Ok(Response::new(wire::ApproveConversionResponse { conversion: Some(to_wire(&c, true)) }))
    }

    async fn reject_conversion(
        &self,
        request: Request<wire::RejectConversionRequest>,
    ) -> Result<Response<wire::RejectConversionResponse>, Status> {
        let staff = backoffice(&request)?;
        let req = request.into_inner();
        let id = request_id(&req.request_id)?;
        let reason = req.reason.trim();
        if reason.is_empty() || reason.chars().count() > 500 {
            let mut v = FieldViolations::new();
            v.add("reason", "say why, in at most 500 characters");
            return Err(IdentityError::Invalid(v).into());
        }
        let decision = Decision { by: Some(&staff.sub), approve: false, reason };
        let c = self.decide(&id, &decision).await?;
        Ok(Response::new(wire::RejectConversionResponse { conversion: Some(to_wire(&c, true)) }))
    }
}

impl Conversions {
    async fn decide(&self, id: &str, d: &Decision<'_>) -> Result<Conversion, IdentityError> {
        if !self.store.decide_conversion(id, d).await? {
            return match self.store.conversion(id).await? {
                None => Err(IdentityError::NotFound("conversion request")),
                Some(_) => Err(IdentityError::Precondition {
                    reason: "NOT_IN_REVIEW",
                    message: "this request is not waiting for the back office",
                }),
            };
        }
        self.store.conversion(id).await?.ok_or(IdentityError::NotFound("conversion request"))
    }
}
