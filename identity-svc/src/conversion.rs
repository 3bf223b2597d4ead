//! PIN dispositivo (DOMAIN §4.4) over gRPC: the citizen's side (`PinConversionService`: the
//! request, its form, the upload and its automatic checks) and the back office's
//! (`PinConversionBackOfficeService`). The files stream straight into the blob store, limits
//! enforced as they arrive; the rules are in `domain::conversion`.

use crate::domain::codice_fiscale::CodiceFiscale;
use crate::domain::conversion::{self as rules, Document, DocumentType, Evidence, OnFile};
use crate::error::IdentityError;
use crate::store::{Conversion, Decision, Store, Uploaded};
use chrono::{Datelike, NaiveDate};
use futures::Stream;
use sportello_platform::auth::{principal, Claims, Level, Role};
use sportello_platform::blobs::{BlobError, BlobStore, BlobWriter, Kind, Stored};
use sportello_platform::error::FieldViolations;
use sportello_proto::identity::v1 as wire;
use sportello_proto::identity::v1::pin_conversion_back_office_service_server::PinConversionBackOfficeService;
use sportello_proto::identity::v1::pin_conversion_service_server::PinConversionService;
use std::pin::Pin;
use std::sync::Arc;
use tokio::io::AsyncReadExt;
use tonic::{Request, Response, Status, Streaming};

/// Bytes per message when a file is sent back.
const CHUNK: usize = 64 * 1024;
/// A signed form bigger than this is not read for its request number (a scan, in practice).
const FORM_READ_LIMIT: usize = 4 * 1024 * 1024;

/// How much an upload may carry.
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub struct UploadLimits {
    /// Each file, in bytes.
    pub max_file_bytes: u64,
    /// Both files together, in bytes.
    pub max_total_bytes: u64,
}

impl Default for UploadLimits {
    fn default() -> Self {
        Self { max_file_bytes: 24 * 1024 * 1024, max_total_bytes: 32 * 1024 * 1024 }
    }
}

#[derive(Clone)]
pub struct Conversions {
    pub store: Store,
    pub blobs: Arc<dyn BlobStore>,
    pub limits: UploadLimits,
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
        }
        value.to_owned()
    };
    let number = text("number", &d.number);
    let issuer = text("issuer", &d.issuer);
    let holder_surname = text("holder_surname", &d.holder_surname);
    let holder_given_name = text("holder_given_name", &d.holder_given_name);
    let mut day = |field: &str, value: Option<&wire::Date>| {
        let parsed = date(value);
        if parsed.is_none() {
            v.add(format!("metadata.document.{field}"), "a calendar date");
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

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// How long a stored file may stay unreferenced before it counts as an upload's leftover: far
/// longer than an upload may take (the gateway caps deadlines at seconds).
const ORPHAN_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Removes, every ten minutes, the files no request refers to: those of uploads that failed
/// after one file was complete, or whose request was not recorded.
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
        let swept: Result<usize, String> = async {
            let old = blobs.stored_before(ORPHAN_AGE).await.map_err(|e| e.to_string())?;
            let kept = store.referenced_blobs(&old).await.map_err(|e| e.to_string())?;
            let mut n = 0;
            for digest in old.iter().filter(|d| !kept.contains(*d)) {
                blobs.remove(digest).await.map_err(|e| e.to_string())?;
                n += 1;
            }
            Ok(n)
        }
        .await;
        match swept {
            Ok(0) => {}
            Ok(n) => tracing::info!(files = n, "unreferenced upload files removed"),
            Err(e) => tracing::warn!(error = %e, "sweep of unreferenced upload files failed"),
        }
    }
}

fn stream_of<T: Send + 'static>(
    items: impl Stream<Item = Result<T, Status>> + Send + 'static,
) -> Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>> {
    Box::pin(items)
}

/// The blob `digest` in messages of [`CHUNK`] bytes, read as they are sent; `wrap` makes a
/// message of a chunk (and knows the first).
async fn chunks<T: Send + 'static>(
    blobs: &Arc<dyn BlobStore>,
    digest: &str,
    wrap: impl Fn(Vec<u8>, bool) -> T + Send + 'static,
) -> Result<Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>, IdentityError> {
    let reader = blobs
        .open(digest)
        .await
        .map_err(|e| IdentityError::Internal(format!("blob store: {e}")))?;
    let messages =
        futures::stream::unfold((reader, true, wrap), |(mut reader, first, wrap)| async move {
            let mut buf = vec![0u8; CHUNK];
            match reader.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    let message = wrap(buf, first);
                    Some((Ok(message), (reader, false, wrap)))
                }
                Err(_) => Some((
                    Err(Status::unavailable("file unreadable; retry")),
                    (reader, false, wrap),
                )),
            }
        });
    Ok(stream_of(messages))
}

impl Conversions {
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

    /// Streams the upload's files into the blob store: (signed form, document scan).
    async fn receive(
        &self,
        stream: &mut Streaming<wire::UploadConversionDocumentsRequest>,
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
            if current.as_ref().is_some_and(|(f, _)| *f != file) {
                let (done, writer) = current.take().expect("a file in progress");
                let stored = writer.finish().await.map_err(|e| refused(done, e))?;
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
            let stored = writer.finish().await.map_err(|e| refused(done, e))?;
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

    /// The signed form's text, when it is a PDF small enough to read.
    async fn form_text(&self, form: &Stored) -> Option<String> {
        if form.kind != Kind::Pdf || form.size as usize > FORM_READ_LIMIT {
            return None;
        }
        let bytes = self.blobs.read_prefix(&form.digest, FORM_READ_LIMIT).await.ok()?;
        // A citizen's PDF, parsed off the async threads: a file that makes the parser panic is
        // just unreadable.
        let text = tokio::task::spawn_blocking(move || sportello_platform::pdf::text_of(&bytes));
        text.await.ok()?.ok()
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
        let opened = self.store.open_conversion(&p.sub, guardian.as_deref(), today().year());
        let conversion =
            opened.await.map_err(IdentityError::from)?.ok_or(IdentityError::Precondition {
                reason: "ALREADY_PENDING",
                message: "a conversion request is already open: withdraw it or wait for it",
            })?;
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
        let (form, scan) = self.receive(&mut stream).await?;
        let on_file = self.on_file(&c.fiscal_code).await?;
        let form_text = self.form_text(&form).await;
        let downloaded = sha256_hex(&Self::form_of(&c, on_file.as_ref()));
        let evidence = Evidence {
            document: &document,
            on_file: on_file.as_ref(),
            form_text: form_text.as_deref(),
            request_number: &c.request_number,
            guardian: c.guardian_fiscal_code.is_some(),
            form_unchanged: form.digest == downloaded,
            scan_is_form: form.digest == scan.digest,
        };
        let failed: Vec<&'static str> =
            rules::automatic_checks(&evidence, today()).into_iter().map(|f| f.as_str()).collect();
        let uploaded = Uploaded {
            document: &document,
            signed_form: (&form.digest, form.kind.mime()),
            scan: (&scan.digest, scan.kind.mime()),
            failed_checks: &failed,
            guardian: c.guardian_fiscal_code.is_some(),
        };
        if !self.store.record_upload(&c.id, &uploaded).await.map_err(IdentityError::from)? {
            return Err(IdentityError::Precondition {
                reason: "NOT_AWAITING_DOCUMENTS",
                message: "this request is not waiting for documents",
            }
            .into());
        }
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
        if !self.store.withdraw_conversion(&c.id, &p.sub).await.map_err(IdentityError::from)? {
            return Err(IdentityError::Precondition {
                reason: "ALREADY_DECIDED",
                message: "this request is decided or withdrawn already",
            }
            .into());
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
        backoffice(&request)?;
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
        // A staff read of a citizen's documents is on the record.
        let detail = format!("request {} {}", c.request_number, which.as_str_name());
        let entry = crate::store::Entry {
            operator_id: &staff.sub,
            action: "DownloadConversionFile",
            fiscal_code: &c.fiscal_code,
            outcome: "OK",
            detail: &detail,
        };
        self.store.audit(&entry).await.map_err(IdentityError::from)?;
        let stream = chunks(&self.blobs, &digest, move |chunk, first| {
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
