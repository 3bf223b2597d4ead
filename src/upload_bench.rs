//! `sportello bench upload`: PIN dispositivo requests through the gateway. Citizens with an
//! ordinary PIN (prepared as for `pin-login`) each open a request, download its form and upload
//! it signed with a scan of `--upload-mb` MB; the bench prints the MB/s of accepted uploads,
//! the time per upload, identity-svc's RSS growth while the files stream (sampled from /proc),
//! and each process's CPU per upload.

use crate::bench::{self, BenchArgs, Prepared};
use crate::clickday::bearer;
use crate::cpu;
use anyhow::Context as _;
use sportello_proto::identity::v1 as id;
use sportello_proto::identity::v1::identity_service_client::IdentityServiceClient;
use sportello_proto::identity::v1::pin_conversion_service_client::PinConversionServiceClient;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};

/// Bytes per upload message.
const CHUNK: usize = 64 * 1024;

/// A photo of a document: a real JPEG (identity-svc decodes it), padded after its end to `len`
/// bytes, as a camera's metadata and thumbnails would make it.
fn scan(len: usize) -> Vec<u8> {
    let photo = image::RgbImage::from_fn(1600, 1000, |x, y| image::Rgb([x as u8, y as u8, 90]));
    let mut bytes = Vec::new();
    photo
        .write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Jpeg)
        .expect("a JPEG encodes in memory");
    if bytes.len() < len {
        bytes.resize(len, 0x5A);
    }
    bytes
}

/// A process's resident set, in bytes.
pub(crate) fn rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// One citizen's whole request: start, form, upload. Returns the bytes uploaded.
async fn convert(
    channel: Channel,
    token: &str,
    form: &id::RequestPinRequest,
    scan: Arc<Vec<u8>>,
) -> anyhow::Result<u64> {
    use id::upload_conversion_documents_request::Part;
    let mut client = PinConversionServiceClient::new(channel);
    let started = client
        .start_pin_conversion(bearer(token, id::StartPinConversionRequest::default())?)
        .await
        .context("StartPinConversion")?
        .into_inner()
        .conversion
        .context("no conversion")?;
    let download = id::DownloadConversionFormRequest { request_id: started.request_id.clone() };
    let mut stream = client.download_conversion_form(bearer(token, download)?).await?.into_inner();
    let mut downloaded = Vec::new();
    while let Some(chunk) = stream.message().await? {
        downloaded.extend(chunk.chunk);
    }
    drop(downloaded);
    let (signed, document) = signed_form_and_document(&started.request_number, form)?;
    let bytes = (signed.len() + scan.len()) as u64;
    let metadata = id::UploadConversionDocumentsRequest {
        part: Some(Part::Metadata(id::UploadMetadata {
            request_id: started.request_id.clone(),
            document: Some(document),
        })),
    };
    let chunk = |file: id::ConversionFile, data: &[u8]| id::UploadConversionDocumentsRequest {
        part: Some(Part::Chunk(id::FileChunk { file: file as i32, data: data.to_vec() })),
    };
    let mut messages = vec![metadata];
    messages.extend(signed.chunks(CHUNK).map(|c| chunk(id::ConversionFile::SignedForm, c)));
    // The scan is cut into messages as they are sent, as a client reading a file would.
    let pieces = (0..scan.len().div_ceil(CHUNK)).map(move |i| {
        let end = ((i + 1) * CHUNK).min(scan.len());
        chunk(id::ConversionFile::IdentityDocument, &scan[i * CHUNK..end])
    });
    let all =
        futures::StreamExt::chain(futures::stream::iter(messages), futures::stream::iter(pieces));
    let done = client.upload_conversion_documents(bearer(token, all)?).await?.into_inner();
    let status = done.conversion.map(|c| c.status).unwrap_or_default();
    // Without a document registry (as on `sportello up`) a person decides: the request is
    // withdrawn, its files deleted, so that the citizen may start again.
    if status == id::PinConversionStatus::InReview as i32 {
        let withdraw = id::WithdrawPinConversionRequest { request_id: started.request_id };
        client.withdraw_pin_conversion(bearer(token, withdraw)?).await.context("withdraw")?;
    } else {
        anyhow::ensure!(
            status == id::PinConversionStatus::Approved as i32,
            "upload neither approved nor waiting for the back office: {status}"
        );
    }
    Ok(bytes)
}

pub async fn run(args: &BenchArgs, prepared: &Prepared, first: u64) -> anyhow::Result<()> {
    let channel = Endpoint::from_shared(args.gateway.clone())?.connect().await?;
    let mut identity = IdentityServiceClient::new(channel.clone());
    let mut citizens = Vec::new();
    for (i, (cf, pin)) in prepared.iter().enumerate() {
        let request = id::LoginWithPinRequest { fiscal_code: cf.clone(), pin: pin.clone() };
        let session =
            identity.login_with_pin(request).await?.into_inner().session.context("session")?;
        citizens.push((bench::citizen(first + i as u64), session.access_token));
    }
    let direct = args.direct.clone().unwrap_or_else(|| "http://127.0.0.1:50052".into());
    let targets = cpu::discover(&[&direct, &args.gateway], &args.pids);
    let identity_pid = targets.iter().find(|t| t.name.starts_with("identity")).map(|t| t.pid);
    let scan = Arc::new(scan(args.upload_mb * 1024 * 1024));

    let (baseline, peak, sampling) = (
        identity_pid.and_then(rss).unwrap_or(0),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicBool::new(true)),
    );
    let sampler = {
        let (peak, sampling) = (peak.clone(), sampling.clone());
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                if let Some(now) = identity_pid.and_then(rss) {
                    peak.fetch_max(now, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let before = cpu::snapshot(&targets);
    let started = Instant::now();
    let work = Arc::new(std::sync::Mutex::new(citizens));
    let mut clients = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let (work, scan, channel) = (work.clone(), scan.clone(), channel.clone());
        clients.push(tokio::spawn(async move {
            let mut done = Vec::new();
            loop {
                let Some((form, token)) =
                    work.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.pop()
                else {
                    return Ok::<_, anyhow::Error>(done);
                };
                let t0 = Instant::now();
                let bytes = convert(channel.clone(), &token, &form, scan.clone()).await?;
                done.push((bytes, t0.elapsed()));
            }
        }));
    }
    let mut uploads = Vec::new();
    for client in clients {
        uploads.extend(client.await??);
    }
    let elapsed = started.elapsed();
    sampling.store(false, Ordering::Relaxed);
    sampler.await?;
    let total: u64 = uploads.iter().map(|(b, _)| b).sum();
    let mut times: Vec<Duration> = uploads.iter().map(|(_, t)| *t).collect();
    times.sort();
    let at = |p: f64| {
        times
            .get(((times.len() as f64 * p) as usize).min(times.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    println!(
        "upload {} {} requests of {} MB each, accepted and read (then approved, or withdrawn from the back office queue), in {:.2} s: {:.1} MB/s accepted, per request p50 {:.0} ms, p99 {:.0} ms",
        args.gateway,
        uploads.len(),
        args.upload_mb,
        elapsed.as_secs_f64(),
        total as f64 / 1_048_576.0 / elapsed.as_secs_f64(),
        at(0.5).as_secs_f64() * 1000.0,
        at(0.99).as_secs_f64() * 1000.0,
    );
    if identity_pid.is_some() {
        let growth = peak.load(Ordering::Relaxed).saturating_sub(baseline);
        println!(
            "identity-svc RSS: {:.1} MB before, growth while uploading {:.1} MB (peak {:.1} MB)",
            baseline as f64 / 1_048_576.0,
            growth as f64 / 1_048_576.0,
            peak.load(Ordering::Relaxed) as f64 / 1_048_576.0
        );
    }
    cpu::report(&targets, &before, uploads.len() as u64, elapsed);
    Ok(())
}

/// The form of request `request_number` signed, as a signing tool would write it (a PDF of its
/// own with the request number), and the identity document of the citizen who filed `form`.
pub(crate) fn signed_form_and_document(
    request_number: &str,
    form: &id::RequestPinRequest,
) -> anyhow::Result<(Vec<u8>, id::IdentityDocument)> {
    let signed = sportello_platform::pdf::render(&[
        sportello_platform::pdf::Block::body(format!("Numero di richiesta: {request_number}")),
        sportello_platform::pdf::Block::body("Firmato"),
    ]);
    let person = form.personal_data.clone().context("personal data")?;
    let document = id::IdentityDocument {
        r#type: id::IdentityDocumentType::CartaIdentita as i32,
        number: "CA00000AA".into(),
        issuer: "Comune di Roma".into(),
        issued_on: Some(id::Date { year: 2022, month: 1, day: 10 }),
        expires_on: Some(id::Date { year: 2032, month: 1, day: 10 }),
        holder_surname: person.surname,
        holder_given_name: person.given_name,
        holder_birth_date: person.birth_date,
    };
    Ok((signed, document))
}
