//! PIN dispositivo you can trust (issue 20): a thief holding one citizen's ordinary PIN gets
//! nothing from junk evidence; only the identity-document registry's MATCH converts at once; the
//! citizen is told first and can have a grant taken back; the level belongs to the PIN; hostile
//! files cost bounded memory and stop with their caller; failed uploads leave nothing on disk.

use crate::conversion::{
    jpeg, ordinary_citizen as ordinary, reason, signed, stored_files, upload_messages,
    upload_through_gateway as upload, via_gateway,
};
use crate::helpers::*;
use sportello_proto::identity::v1 as id;
use sportello_proto::identity::v1::contact_center_service_client::ContactCenterServiceClient;
use sportello_proto::identity::v1::pin_conversion_back_office_service_client::PinConversionBackOfficeServiceClient;
use std::time::Duration;
use tonic::Code;

use id::ConversionFile::{IdentityDocument as SCAN, SignedForm as FORM};
use id::PinConversionStatus as St;

async fn start(suite: &Suite, token: &str) -> Result<id::PinConversion, tonic::Status> {
    let request = with_token(token, id::StartPinConversionRequest::default());
    Ok(via_gateway(suite)
        .await
        .start_pin_conversion(request)
        .await?
        .into_inner()
        .conversion
        .expect("c"))
}

async fn form_pdf(suite: &Suite, token: &str, request_id: &str) -> Vec<u8> {
    crate::conversion::form_pdf(suite, token, request_id).await.expect("the form")
}

fn messages(
    request_id: &str,
    document: id::IdentityDocument,
    files: &[(id::ConversionFile, Vec<u8>)],
) -> Vec<id::UploadConversionDocumentsRequest> {
    upload_messages(request_id, document, files, 256 * 1024)
}

fn document(form: &id::RequestPinRequest, number: &str) -> id::IdentityDocument {
    let person = form.personal_data.clone().expect("personal data");
    id::IdentityDocument {
        r#type: id::IdentityDocumentType::CartaIdentita as i32,
        number: number.into(),
        issuer: "Comune di Roma".into(),
        issued_on: Some(id::Date { year: 2022, month: 5, day: 2 }),
        expires_on: Some(id::Date { year: 2032, month: 5, day: 2 }),
        holder_surname: person.surname,
        holder_given_name: person.given_name,
        holder_birth_date: person.birth_date,
    }
}

async fn pin_level(suite: &Suite, cf: &str) -> String {
    let dispositive = suite
        .db
        .count(
            "identity",
            "citizens",
            &format!("fiscal_code = '{cf}' AND pin_level = 'DISPOSITIVE'"),
        )
        .await;
    if dispositive == 1 { "DISPOSITIVE" } else { "ORDINARY" }.to_owned()
}

fn unreadable(status: &tonic::Status, what: &str) {
    assert_eq!(
        (status.code(), reason(status), violated_fields(status)),
        (Code::InvalidArgument, "DOCUMENT_UNREADABLE".to_owned(), vec!["chunk.data".to_owned()]),
        "{what}: {status:?}"
    );
}

#[tokio::test]
async fn a_thief_with_an_ordinary_pin_and_junk_evidence_converts_nothing() {
    // As `sportello up` runs: no document registry, so a person decides everything.
    let suite = spawn_suite_with(|c| c.identity.pins.notices_per_hour = 20).await;
    let (cf, form, token) = ordinary(&suite, "Ladri", (1970, 7, 7)).await;
    let conversion = start(&suite, &token).await.expect("started");
    let pdf = form_pdf(&suite, &token, &conversion.request_id).await;
    let printed = form.personal_data.clone().expect("the printed anagrafica");
    let mut form_plus_one = pdf.clone();
    form_plus_one.push(b' ');
    let mut junk_jpeg = vec![0xFF, 0xD8, 0xFF, 0xE0];
    junk_jpeg.extend((0..1024).map(|i| (i * 31 % 251) as u8));
    let html_pdf = b"%PDF-1.4\n<html><body>firmato</body></html>".to_vec();
    let doc = id::IdentityDocument {
        holder_surname: printed.surname.clone(),
        holder_given_name: printed.given_name.clone(),
        ..document(&form, "AX0000000")
    };
    for (what, files) in [
        ("junk behind a JPEG header", vec![(FORM, form_plus_one.clone()), (SCAN, junk_jpeg)]),
        ("HTML after %PDF-", vec![(FORM, form_plus_one.clone()), (SCAN, html_pdf)]),
    ] {
        let refused = upload(&suite, &token, &conversion.request_id, doc.clone(), &files)
            .await
            .expect_err(what);
        unreadable(&refused, what);
    }
    let queued = upload(
        &suite,
        &token,
        &conversion.request_id,
        doc,
        &[(FORM, form_plus_one), (SCAN, pdf.clone())],
    )
    .await
    .expect("queued");
    assert_eq!(queued.status, St::InReview as i32);
    for check in ["FORM_NOT_SIGNED", "SCAN_IS_THE_FORM", "DOCUMENT_NOT_VERIFIED"] {
        assert!(queued.failed_checks.contains(&check.to_owned()), "{check}: {queued:?}");
    }
    let session = suite.login_with_pin(&cf, crate::auth::OWN_PIN).await.expect("login");
    assert_eq!(session.level, id::CredentialLevel::Ordinary as i32, "no dispositive session");
    assert_eq!(pin_level(&suite, &cf).await, "ORDINARY");
    // The citizen was told on every contact on file when the request opened.
    let told = suite.db.messages("PIN_CONVERSION_STARTED").await;
    assert!(told.len() >= 2, "every contact on file: {}", told.len());
}

#[tokio::test]
async fn the_registry_decides_match_converts_no_match_rejects_unknown_or_silence_queues() {
    let (registry, asked) = fake_authority(|q| match q["number"].as_str().unwrap_or_default() {
        "MATCH0001" => ("MATCH", Duration::ZERO),
        "NOMATCH01" => ("NO_MATCH", Duration::ZERO),
        "SLOW00001" => ("MATCH", Duration::from_secs(5)),
        _ => ("UNKNOWN", Duration::ZERO),
    })
    .await;
    let suite = spawn_suite_with(|c| {
        c.identity.document_verification_url = registry;
        c.identity.document_verification_timeout = Duration::from_millis(500);
    })
    .await;
    let cases = [
        ("Uno", "MATCH0001", St::Approved, vec![]),
        ("Due", "NOMATCH01", St::Rejected, vec![]),
        ("Tre", "UNKNOWN01", St::InReview, vec!["DOCUMENT_NOT_VERIFIED"]),
        ("Quattro", "SLOW00001", St::InReview, vec!["DOCUMENT_NOT_VERIFIED"]),
    ];
    for (surname, number, status, checks) in cases {
        let (cf, form, token) = ordinary(&suite, surname, (1981, 3, 4)).await;
        let conversion = start(&suite, &token).await.expect("started");
        let pdf = form_pdf(&suite, &token, &conversion.request_id).await;
        let files = [(FORM, signed(pdf)), (SCAN, jpeg(30_000))];
        let done = upload(&suite, &token, &conversion.request_id, document(&form, number), &files)
            .await
            .expect(number);
        assert_eq!(
            (done.status, done.failed_checks.clone()),
            (status as i32, checks.iter().map(|c| c.to_string()).collect::<Vec<_>>()),
            "{number}"
        );
        let level = if status == St::Approved { "DISPOSITIVE" } else { "ORDINARY" };
        assert_eq!(pin_level(&suite, &cf).await, level, "{number}");
        if status == St::Rejected {
            assert!(!done.rejection_reason.is_empty(), "the citizen is told why");
        }
        if status == St::Approved {
            // Every notice of the request had left for the citizen before the grant was written.
            suite.db.outbox_relayed().await;
            let outbox = suite.db.table("identity", "outbox");
            let before = suite
                .db
                .count(
                    "identity",
                    "outbox",
                    &format!(
                        "fiscal_code = '{cf}' AND template = 'PIN_CONVERSION_STARTED' AND \
                         done_at <= (SELECT MIN(created_at) FROM {outbox} o WHERE \
                         o.fiscal_code = '{cf}' AND o.template = 'PIN_DISPOSITIVO_GRANTED')"
                    ),
                )
                .await;
            let started = suite
                .db
                .count(
                    "identity",
                    "outbox",
                    &format!("fiscal_code = '{cf}' AND template = 'PIN_CONVERSION_STARTED'"),
                )
                .await;
            assert_eq!((before, started > 0), (started, true), "started notices first");
        }
    }
    let asked = asked.lock().expect("lock").clone();
    assert_eq!(asked.len(), 4);
    assert_eq!(asked[0]["document_type"], "CARTA_IDENTITA");
    assert_eq!(asked[0]["birth_date"], "1981-03-04");
    assert!(asked[0]["holder_fiscal_code"].as_str().is_some_and(|cf| cf.len() == 16));
}

#[tokio::test]
async fn a_minor_needs_a_guardian_and_a_revoked_grant_or_pin_leaves_the_pin_ordinary() {
    let (registry, _) = fake_authority(|_| ("MATCH", Duration::ZERO)).await;
    let suite = spawn_suite_with(|c| {
        c.identity.document_verification_url = registry;
        c.identity.pins.notices_per_hour = 20;
    })
    .await;
    let (_, _, minor_token) = ordinary(&suite, "Piccoli", (2012, 1, 1)).await;
    let refused = start(&suite, &minor_token).await.expect_err("a minor alone");
    assert_eq!(
        (refused.code(), reason(&refused)),
        (Code::FailedPrecondition, "GUARDIAN_REQUIRED".into())
    );

    let (cf, form, token) = ordinary(&suite, "Grandi", (1960, 2, 2)).await;
    let convert = |token: String| {
        let (suite, form) = (&suite, form.clone());
        async move {
            let conversion = start(suite, &token).await.expect("started");
            let pdf = form_pdf(suite, &token, &conversion.request_id).await;
            let files = [(FORM, signed(pdf)), (SCAN, jpeg(30_000))];
            upload(suite, &token, &conversion.request_id, document(&form, "MATCH0001"), &files)
                .await
                .expect("uploaded")
        }
    };
    let done = convert(token.clone()).await;
    assert_eq!(done.status, St::Approved as i32, "{done:?}");
    let dispositive = suite.login_with_pin(&cf, crate::auth::OWN_PIN).await.expect("login");
    assert_eq!(dispositive.level, id::CredentialLevel::Dispositive as i32);

    let live_dispositive =
        format!("subject = '{cf}' AND level = 'dispositive' AND revoked_at IS NULL");
    assert_eq!(suite.db.count("identity", "sessions", &live_dispositive).await, 1);
    // "It was not me": the contact center takes the grant back within the hold.
    let mut cc = ContactCenterServiceClient::new(suite.gateway_channel().await);
    let revoke = id::RevokeConversionRequest {
        fiscal_code: cf.clone(),
        reason: "non l'ho chiesta io".into(),
    };
    let revoked = cc
        .revoke_conversion(with_token(&suite.operator_token, revoke.clone()))
        .await
        .expect("revoked")
        .into_inner();
    assert!(revoked.request_number.starts_with("DISP."));
    assert_eq!(pin_level(&suite, &cf).await, "ORDINARY");
    let ended = suite
        .db
        .count(
            "identity",
            "sessions",
            &format!("subject = '{cf}' AND level = 'dispositive' AND revoked_at IS NULL"),
        )
        .await;
    assert_eq!(ended, 0, "dispositive sessions end");
    let again =
        cc.revoke_conversion(with_token(&suite.operator_token, revoke)).await.expect_err("twice");
    assert_eq!(reason(&again), "NO_RECENT_CONVERSION");
    let trail = suite
        .db
        .count("identity", "audit_events", &format!("fiscal_code = '{cf}' AND action = 'RevokeConversion' AND operator_id = '{OPERATOR_ID}'"))
        .await;
    assert!(trail >= 2, "the revocation and the refused second try are on the record");
    assert!(!suite.db.messages("PIN_DISPOSITIVO_REVOKED").await.is_empty(), "the citizen is told");

    // Whoever asked may still hold the PIN: from now on a person decides, even on a MATCH.
    let session = suite.login_with_pin(&cf, crate::auth::OWN_PIN).await.expect("login");
    let queued = convert(session.access_token).await;
    assert_eq!(
        (queued.status, queued.failed_checks),
        (St::InReview as i32, vec!["PREVIOUSLY_REVOKED".to_owned()])
    );
    let bo_token = suite.login_staff(BACKOFFICE_ID, BACKOFFICE_PASSWORD).await.access_token;
    let mut bo = PinConversionBackOfficeServiceClient::new(suite.gateway_channel().await);
    let approve = id::ApproveConversionRequest { request_id: queued.request_id };
    bo.approve_conversion(with_token(&bo_token, approve)).await.expect("approved by a person");
    // Dispositive again, then the PIN is revoked: the level goes with it.
    assert_eq!(pin_level(&suite, &cf).await, "DISPOSITIVE");
    cc.revoke_pin(with_token(
        &suite.operator_token,
        id::RevokePinRequest { fiscal_code: cf.clone(), reason: "smarrito".into() },
    ))
    .await
    .expect("PIN revoked");
    assert_eq!(pin_level(&suite, &cf).await, "ORDINARY", "a revoked PIN is not dispositive");
}

/// A one-page PDF whose content stream is `layers` Flate filters over `zeros` zero bytes.
fn inflating_pdf(zeros: usize, layers: usize) -> Vec<u8> {
    use std::io::Write;
    let mut data = {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        let block = vec![0u8; 1 << 20];
        for _ in 0..zeros >> 20 {
            z.write_all(&block).expect("deflate");
        }
        z.finish().expect("deflate")
    };
    for _ in 1..layers {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(&data).expect("deflate");
        data = z.finish().expect("deflate");
    }
    let mut pdf = pdf_writer::Pdf::new();
    let (catalog, tree, page, content) = (
        pdf_writer::Ref::new(1),
        pdf_writer::Ref::new(2),
        pdf_writer::Ref::new(3),
        pdf_writer::Ref::new(4),
    );
    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree).kids([page]).count(1);
    pdf.page(page)
        .parent(tree)
        .media_box(pdf_writer::Rect::new(0.0, 0.0, 595.0, 842.0))
        .contents(content);
    let flate = vec![pdf_writer::Name(b"FlateDecode"); layers];
    pdf.stream(content, &data).insert(pdf_writer::Name(b"Filter")).array().items(flate);
    pdf.finish()
}

/// A PDF of `n` near-empty pages.
fn many_pages(n: i32) -> Vec<u8> {
    let mut pdf = pdf_writer::Pdf::new();
    let (catalog, tree) = (pdf_writer::Ref::new(1), pdf_writer::Ref::new(2));
    pdf.catalog(catalog).pages(tree);
    let pages: Vec<_> = (0..n).map(|i| pdf_writer::Ref::new(10 + 2 * i)).collect();
    pdf.pages(tree).kids(pages.iter().copied()).count(n);
    for (i, page) in pages.iter().enumerate() {
        let content = pdf_writer::Ref::new(11 + 2 * i as i32);
        pdf.page(*page)
            .parent(tree)
            .media_box(pdf_writer::Rect::new(0.0, 0.0, 595.0, 842.0))
            .contents(content);
        pdf.stream(content, b"BT /F1 9 Tf 60 780 Td (pagina) Tj ET");
    }
    pdf.finish()
}

/// This process's peak resident memory, in bytes (identity-svc runs in it).
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let kb = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).expect("VmHWM");
    kb.trim().trim_end_matches(" kB").trim().parse::<u64>().expect("kB") * 1024
}

/// File readers this process has started that are still running.
fn probe_children() -> usize {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            // ppid is the fourth field, after the parenthesised command.
            let ppid = stat
                .rsplit_once(") ")
                .map(|(_, rest)| rest.split(' ').nth(1).unwrap_or("").to_owned());
            ppid.as_deref() == Some(me.as_str())
                && String::from_utf8_lossy(&cmdline).contains("file-probe")
        })
        .count()
}

#[tokio::test]
async fn hostile_files_are_refused_within_bounds_and_reading_stops_when_the_caller_goes() {
    let suite = spawn_suite_with(|c| c.identity.pins.notices_per_hour = 20).await;
    let (_, form, token) = ordinary(&suite, "Bombe", (1977, 4, 4)).await;
    let conversion = start(&suite, &token).await.expect("started");
    let signed_form = signed(form_pdf(&suite, &token, &conversion.request_id).await);
    let before = peak_rss();
    // 32 MiB behind two Flate layers (a few hundred bytes), and 5,000 pages.
    for (what, hostile) in [
        ("the inflating content stream", inflating_pdf(32 << 20, 2)),
        ("5,000 pages", many_pages(5_000)),
    ] {
        let files = [(FORM, signed_form.clone()), (SCAN, hostile)];
        let (size, asked) = (files[1].1.len(), std::time::Instant::now());
        let refused =
            upload(&suite, &token, &conversion.request_id, document(&form, "AB1234567"), &files)
                .await
                .expect_err(what);
        unreadable(&refused, what);
        eprintln!("{what}: {size} bytes refused in {:?}", asked.elapsed());
    }
    let grown = peak_rss().saturating_sub(before);
    eprintln!("peak RSS of the process holding identity-svc grew by {} KB", grown >> 10);
    assert!(grown < 64 << 20, "identity's peak memory grew by {} MB", grown >> 20);

    // A large photo takes the reader a while: the caller gives up, and the reader is killed.
    let photo = image::RgbImage::from_fn(5_000, 5_000, |x, y| {
        image::Rgb([(x ^ y) as u8, (x * 7) as u8, (y * 3) as u8])
    });
    let mut png = Vec::new();
    photo.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).expect("png");
    let files = [(FORM, signed_form), (SCAN, png)];
    let mut request = with_token(
        &token,
        futures::stream::iter(messages(
            &conversion.request_id,
            document(&form, "AB1234567"),
            &files,
        )),
    );
    request.set_timeout(Duration::from_millis(800));
    let gone = via_gateway(&suite).await.upload_conversion_documents(request).await;
    assert!(gone.is_err(), "the deadline passed first");
    eventually("the file reader killed with its call", Duration::from_secs(3), || async {
        probe_children() == 0
    })
    .await;
}

#[tokio::test]
async fn failed_uploads_leave_nothing_on_disk_and_the_quota_bounds_uploads_in_progress() {
    let suite = spawn_suite_with(|c| {
        c.identity.uploads.max_bytes_per_citizen = 40 << 20;
        c.identity.pins.notices_per_hour = 20;
    })
    .await;
    let (_, form, token) = ordinary(&suite, "Disco", (1985, 5, 5)).await;
    let conversion = start(&suite, &token).await.expect("started");
    let mut big = b"%PDF-1.7\n".to_vec();
    big.resize(20 << 20, b'x');
    let zip = b"PK\x03\x04 not a document".to_vec();
    for i in 0..20u8 {
        let mut form_file = big.clone();
        form_file.push(i);
        let files = [(FORM, form_file), (SCAN, zip.clone())];
        let refused =
            upload(&suite, &token, &conversion.request_id, document(&form, "AB1234567"), &files)
                .await
                .expect_err("a ZIP is no document");
        assert_eq!(refused.code(), Code::InvalidArgument);
        eventually("nothing of the failed upload left", Duration::from_secs(5), || async {
            stored_files(&suite).is_empty()
        })
        .await;
    }

    // One upload in progress holds 20 MiB; a second one at the same time passes the 40 MiB bound.
    let (tx, rx) = tokio::sync::mpsc::channel(128);
    for m in messages(&conversion.request_id, document(&form, "AB1234567"), &[(FORM, big.clone())])
    {
        tx.send(m).await.expect("queued");
    }
    let held = with_token(&token, tokio_stream::wrappers::ReceiverStream::new(rx));
    let mut first_client = via_gateway(&suite).await;
    let first = tokio::spawn(async move { first_client.upload_conversion_documents(held).await });
    eventually("the first upload counted", Duration::from_secs(10), || async {
        suite.db.count("identity", "conversion_uploads", "bytes >= 20971520").await == 1
    })
    .await;
    let files = [(FORM, big), (SCAN, jpeg(5 << 20))];
    let refused =
        upload(&suite, &token, &conversion.request_id, document(&form, "AB1234567"), &files)
            .await
            .expect_err("over the quota");
    assert_eq!(
        (refused.code(), reason(&refused)),
        (Code::ResourceExhausted, "UPLOAD_QUOTA_EXCEEDED".into())
    );
    drop(tx);
    let _ = first.await;
    eventually("nothing left once both ended", Duration::from_secs(5), || async {
        stored_files(&suite).is_empty()
    })
    .await;
}

#[tokio::test]
async fn the_sweep_running_beside_uploads_never_deletes_a_file_a_request_names() {
    let suite = spawn_suite_with(|c| c.identity.pins.notices_per_hour = 20).await;
    let store = suite.db.identity_store().await;
    let blobs = sportello_platform::blobs::FsBlobs::open(suite.db.data_dir().join("blobs"))
        .await
        .expect("blobs");
    let sweeping = tokio_util::sync::CancellationToken::new();
    let sweeper = {
        let (store, blobs, stop) = (store.clone(), blobs.clone(), sweeping.clone());
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                identity_svc::conversion::sweep_once(&store, &blobs, Duration::from_secs(3600))
                    .await
                    .expect("sweep");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    // Two citizens send the very same photo, over and over, while the sweep runs.
    let photo = jpeg(40_000);
    let mut requests = Vec::new();
    for surname in ["Primo", "Secondo"] {
        let (_, form, token) = ordinary(&suite, surname, (1970, 1, 1)).await;
        for _ in 0..3 {
            let conversion = start(&suite, &token).await.expect("started");
            let pdf = form_pdf(&suite, &token, &conversion.request_id).await;
            let files = [(FORM, signed(pdf)), (SCAN, photo.clone())];
            let done = upload(
                &suite,
                &token,
                &conversion.request_id,
                document(&form, "AB1234567"),
                &files,
            )
            .await
            .expect("uploaded");
            assert_eq!(done.status, St::InReview as i32);
            requests.push((token.clone(), conversion.request_id.clone()));
            let named = store.conversion(&conversion.request_id).await.expect("read").expect("c");
            for (digest, _) in [named.signed_form, named.scan].into_iter().flatten() {
                let path = suite.db.data_dir().join("blobs").join(&digest[..2]).join(&digest);
                assert!(path.exists(), "a named file was swept");
            }
            let withdraw = id::WithdrawPinConversionRequest { request_id: conversion.request_id };
            via_gateway(&suite)
                .await
                .withdraw_pin_conversion(with_token(&token, withdraw))
                .await
                .expect("withdrawn");
        }
    }
    sweeping.cancel();
    sweeper.await.expect("sweeper");
    eventually("withdrawn files deleted at once", Duration::from_secs(5), || async {
        stored_files(&suite).iter().all(|p| p.starts_with(suite.db.data_dir().join("blobs/tmp")))
    })
    .await;
}

#[tokio::test]
async fn revoke_conversion_refuses_bad_input_by_field_and_is_for_operators_only() {
    let suite = spawn_suite().await;
    let (cf, _, citizen_token) = ordinary(&suite, "Campi", (1972, 2, 2)).await;
    let mut cc = ContactCenterServiceClient::new(suite.gateway_channel().await);
    for (fiscal_code, reason, field) in [
        ("RSSMRA85T10A56", "non l'ho chiesta io", "fiscal_code"),
        (cf.as_str(), "", "reason"),
        (cf.as_str(), "   ", "reason"),
    ] {
        let request =
            id::RevokeConversionRequest { fiscal_code: fiscal_code.into(), reason: reason.into() };
        let refused = cc
            .revoke_conversion(with_token(&suite.operator_token, request))
            .await
            .expect_err(field);
        assert_eq!(
            (refused.code(), violated_fields(&refused)),
            (Code::InvalidArgument, vec![field.to_owned()])
        );
    }
    // A citizen — the thief with one PIN among them — cannot take a grant back, theirs or another's.
    for target in [cf.as_str(), "RSSMRA85T10A562S"] {
        let request =
            id::RevokeConversionRequest { fiscal_code: target.into(), reason: "io".into() };
        let refused =
            cc.revoke_conversion(with_token(&citizen_token, request)).await.expect_err("citizen");
        assert_eq!(refused.code(), Code::PermissionDenied, "{target}");
    }
}
