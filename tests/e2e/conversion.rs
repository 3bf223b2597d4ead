//! PIN dispositivo (issue 12): the pre-filled form, the upload of the signed form and the
//! identity document through the gateway, the instant conversion when every check passes, the
//! back office's queue otherwise, withdrawal, the upload's limits, and other citizens kept out.

use crate::auth::active_citizen;
use crate::helpers::*;
use sportello_proto::identity::v1 as id;
use sportello_proto::identity::v1::pin_conversion_back_office_service_client::PinConversionBackOfficeServiceClient;
use sportello_proto::identity::v1::pin_conversion_service_client::PinConversionServiceClient;
use std::time::Duration;
use tonic::transport::Channel;
use tonic::Code;
use tonic_types::StatusExt;

use id::ConversionFile::{IdentityDocument as SCAN, SignedForm as FORM};
use id::PinConversionStatus as St;

/// A phone's photo of a document: a real JPEG, padded after its end to `len` bytes (what
/// follows the end of an image is ignored, and the padding makes each photo a file of its own).
pub fn jpeg(len: usize) -> Vec<u8> {
    let photo = image::RgbImage::from_fn(240, 200, |x, y| image::Rgb([x as u8, y as u8, 90]));
    let mut bytes = Vec::new();
    photo.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Jpeg).expect("jpeg");
    if bytes.len() < len {
        bytes.resize(len, 0x42);
    }
    bytes
}

/// The form as the citizen sends it back signed: a PDF of its own (a signing tool's output)
/// carrying the request number printed on the downloaded one.
pub fn signed(pdf: Vec<u8>) -> Vec<u8> {
    use sportello_platform::pdf::{render, Block};
    let text = sportello_platform::pdf::text_of(&pdf).expect("the downloaded form");
    let number = text.split_whitespace().find(|w| w.starts_with("DISP.")).expect("a number");
    render(&[Block::body(format!("Numero di richiesta: {number}")), Block::body("Firmato: Anna")])
}

pub(crate) fn reason(status: &tonic::Status) -> String {
    status.get_details_error_info().map(|i| i.reason).unwrap_or_default()
}

pub(crate) fn citizens(channel: Channel) -> PinConversionServiceClient<Channel> {
    PinConversionServiceClient::new(channel)
}

pub(crate) async fn via_gateway(suite: &Suite) -> PinConversionServiceClient<Channel> {
    citizens(suite.gateway_channel().await)
}

/// A citizen on the register with an ordinary PIN: (fiscal code, form, session token).
pub(crate) async fn ordinary_citizen(
    suite: &Suite,
    surname: &str,
    born: (i32, u32, u32),
) -> (String, id::RequestPinRequest, String) {
    let (cf, form) = citizen_request(surname, "Anna", born, id::Sex::Female);
    suite.register_residents(&[&form]).await;
    let session = active_citizen(suite, form.clone()).await;
    (cf, form, session.access_token)
}

/// The document of the person on `form`, valid for years.
pub(crate) fn document_of(form: &id::RequestPinRequest) -> id::IdentityDocument {
    let person = form.personal_data.clone().expect("personal data");
    id::IdentityDocument {
        r#type: id::IdentityDocumentType::CartaIdentita as i32,
        number: "CA12345AA".into(),
        issuer: "Comune di Roma".into(),
        issued_on: Some(id::Date { year: 2022, month: 5, day: 2 }),
        expires_on: Some(id::Date { year: 2032, month: 5, day: 2 }),
        holder_surname: person.surname,
        holder_given_name: person.given_name,
        holder_birth_date: person.birth_date,
    }
}

pub(crate) async fn start(suite: &Suite, token: &str) -> id::PinConversion {
    via_gateway(suite)
        .await
        .start_pin_conversion(with_token(token, id::StartPinConversionRequest::default()))
        .await
        .expect("started")
        .into_inner()
        .conversion
        .expect("conversion")
}

pub(crate) async fn form_pdf(
    suite: &Suite,
    token: &str,
    request_id: &str,
) -> Result<Vec<u8>, tonic::Status> {
    let request = id::DownloadConversionFormRequest { request_id: request_id.into() };
    let mut stream = via_gateway(suite)
        .await
        .download_conversion_form(with_token(token, request))
        .await?
        .into_inner();
    let mut pdf = Vec::new();
    while let Some(chunk) = stream.message().await? {
        pdf.extend(chunk.chunk);
    }
    Ok(pdf)
}

/// The upload's messages: metadata, then each file in chunks of `chunk` bytes.
pub(crate) fn upload_messages(
    request_id: &str,
    document: id::IdentityDocument,
    files: &[(id::ConversionFile, Vec<u8>)],
    chunk: usize,
) -> Vec<id::UploadConversionDocumentsRequest> {
    use id::upload_conversion_documents_request::Part;
    let mut messages = vec![id::UploadConversionDocumentsRequest {
        part: Some(Part::Metadata(id::UploadMetadata {
            request_id: request_id.into(),
            document: Some(document),
        })),
    }];
    for (file, bytes) in files {
        for piece in bytes.chunks(chunk) {
            messages.push(id::UploadConversionDocumentsRequest {
                part: Some(Part::Chunk(id::FileChunk { file: *file as i32, data: piece.to_vec() })),
            });
        }
    }
    messages
}

pub(crate) async fn upload(
    mut client: PinConversionServiceClient<Channel>,
    token: &str,
    request_id: &str,
    document: id::IdentityDocument,
    files: &[(id::ConversionFile, Vec<u8>)],
) -> Result<id::PinConversion, tonic::Status> {
    let messages = upload_messages(request_id, document, files, 64 * 1024);
    let reply = client
        .upload_conversion_documents(with_token(token, futures::stream::iter(messages)))
        .await?;
    Ok(reply.into_inner().conversion.expect("conversion"))
}

pub(crate) async fn upload_through_gateway(
    suite: &Suite,
    token: &str,
    request_id: &str,
    document: id::IdentityDocument,
    files: &[(id::ConversionFile, Vec<u8>)],
) -> Result<id::PinConversion, tonic::Status> {
    upload(via_gateway(suite).await, token, request_id, document, files).await
}

pub(crate) async fn backoffice(
    suite: &Suite,
) -> (PinConversionBackOfficeServiceClient<Channel>, String) {
    let token = suite.login_staff(BACKOFFICE_ID, BACKOFFICE_PASSWORD).await.access_token;
    (PinConversionBackOfficeServiceClient::new(suite.gateway_channel().await), token)
}

/// Files in the blob store (temporary ones included).
pub(crate) fn stored_files(suite: &Suite) -> Vec<std::path::PathBuf> {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&suite.db.data_dir().join("blobs"), &mut out);
    out
}

#[tokio::test]
async fn an_ordinary_pin_becomes_dispositivo_at_once_when_the_registry_confirms_the_document() {
    let (registry, _) = fake_authority(|_| ("MATCH", Duration::ZERO)).await;
    let suite = spawn_suite_with(|c| c.identity.document_verification_url = registry).await;
    let (cf, form, token) = ordinary_citizen(&suite, "Verdi", (1980, 1, 1)).await;
    let conversion = start(&suite, &token).await;
    assert_eq!(conversion.status, St::AwaitingDocuments as i32);
    assert!(conversion.request_number.starts_with("DISP."), "{conversion:?}");

    let pdf = form_pdf(&suite, &token, &conversion.request_id).await.expect("form");
    let text = sportello_platform::pdf::text_of(&pdf).expect("a readable PDF");
    for expected in
        [conversion.request_number.as_str(), cf.as_str(), "Verdi", "Anna", "01/01/1980", "Firma"]
    {
        assert!(text.contains(expected), "{expected} on the form: {text}");
    }

    let files = [(FORM, signed(pdf)), (SCAN, jpeg(300 * 1024))];
    let done =
        upload_through_gateway(&suite, &token, &conversion.request_id, document_of(&form), &files)
            .await
            .expect("uploaded");
    assert_eq!(
        (done.status, done.failed_checks.clone()),
        (St::Approved as i32, vec![]),
        "{done:?}"
    );
    let session = suite.login_with_pin(&cf, crate::auth::OWN_PIN).await.expect("login");
    assert_eq!(
        session.level,
        id::CredentialLevel::Dispositive as i32,
        "new sessions are dispositive"
    );
    let profile = crate::auth::profile(&suite, &session.access_token).await.expect("profile");
    assert_eq!(profile.level, id::CredentialLevel::Dispositive as i32);
    suite.db.outbox_relayed().await;
    assert!(!suite.db.messages("PIN_DISPOSITIVO_GRANTED").await.is_empty(), "the citizen is told");

    let again = via_gateway(&suite)
        .await
        .start_pin_conversion(with_token(
            &session.access_token,
            id::StartPinConversionRequest::default(),
        ))
        .await
        .expect_err("already dispositive");
    assert_eq!(reason(&again), "ALREADY_DISPOSITIVE");
}

#[tokio::test]
async fn each_failed_check_sends_the_request_to_the_back_office_which_approves_or_rejects_it() {
    let (registry, _) = fake_authority(|_| ("MATCH", Duration::ZERO)).await;
    let suite = spawn_suite_with(|c| {
        c.identity.document_verification_url = registry;
        // Six requests in a row: each start's notice counts against the hour's notices.
        c.identity.pins.notices_per_hour = 20;
    })
    .await;
    let (cf, form, token) = ordinary_citizen(&suite, "Neri", (1975, 6, 15)).await;
    let expired = id::IdentityDocument {
        issued_on: Some(id::Date { year: 2010, month: 1, day: 1 }),
        expires_on: Some(id::Date { year: 2020, month: 1, day: 1 }),
        ..document_of(&form)
    };
    let someone_else =
        id::IdentityDocument { holder_given_name: "Paola".into(), ..document_of(&form) };
    let cases = [
        ("an expired document", expired, "signed", "DOCUMENT_EXPIRED"),
        ("another person's document", someone_else, "signed", "HOLDER_MISMATCH"),
        ("a photo of the signed form", document_of(&form), "photo", "REQUEST_NUMBER_MISSING"),
        ("the form sent back unsigned", document_of(&form), "unsigned", "FORM_NOT_SIGNED"),
    ];
    for (what, document, form_as_pdf, check) in cases {
        let conversion = start(&suite, &token).await;
        let pdf = form_pdf(&suite, &token, &conversion.request_id).await.expect("form");
        let signed = match form_as_pdf {
            "signed" => signed(pdf),
            "unsigned" => pdf,
            _ => jpeg(10_000),
        };
        let files = [(FORM, signed), (SCAN, jpeg(50_000))];
        let queued =
            upload_through_gateway(&suite, &token, &conversion.request_id, document, &files)
                .await
                .expect(what);
        assert_eq!(
            (queued.status, queued.failed_checks.clone()),
            (St::InReview as i32, vec![check.to_owned()]),
            "{what}"
        );
        let second = via_gateway(&suite)
            .await
            .start_pin_conversion(with_token(&token, id::StartPinConversionRequest::default()))
            .await
            .expect_err("a second pending request");
        assert_eq!(reason(&second), "ALREADY_PENDING", "{what}");
        let withdrawn = via_gateway(&suite)
            .await
            .withdraw_pin_conversion(with_token(
                &token,
                id::WithdrawPinConversionRequest { request_id: conversion.request_id },
            ))
            .await
            .expect("withdrawn")
            .into_inner()
            .conversion
            .expect("conversion");
        assert_eq!(withdrawn.status, St::Withdrawn as i32, "{what}");
    }

    // One more in review, which the back office lists, reads and rejects; then one it approves.
    let (mut bo, bo_token) = backoffice(&suite).await;
    let mut decided = Vec::new();
    for approve in [false, true] {
        let conversion = start(&suite, &token).await;
        let scan = jpeg(20_000 + usize::from(approve));
        let files = [(FORM, jpeg(10_000)), (SCAN, scan.clone())];
        upload_through_gateway(&suite, &token, &conversion.request_id, document_of(&form), &files)
            .await
            .expect("in review");
        let listed = bo
            .list_pending_conversions(with_token(
                &bo_token,
                id::ListPendingConversionsRequest::default(),
            ))
            .await
            .expect("queue")
            .into_inner();
        let ids: Vec<_> = listed
            .conversions
            .iter()
            .map(|c| (c.request_id.as_str(), c.fiscal_code.as_str()))
            .collect();
        assert_eq!(ids, [(conversion.request_id.as_str(), cf.as_str())]);
        let download = id::DownloadConversionFileRequest {
            request_id: conversion.request_id.clone(),
            file: SCAN as i32,
        };
        let mut stream = bo
            .download_conversion_file(with_token(&bo_token, download))
            .await
            .expect("file")
            .into_inner();
        let (mut bytes, mut content_type) = (Vec::new(), String::new());
        while let Some(m) = stream.message().await.expect("chunk") {
            if content_type.is_empty() {
                content_type = m.content_type;
            }
            bytes.extend(m.chunk);
        }
        assert_eq!((content_type.as_str(), bytes == scan), ("image/jpeg", true));
        let outcome = if approve {
            let request =
                id::ApproveConversionRequest { request_id: conversion.request_id.clone() };
            bo.approve_conversion(with_token(&bo_token, request))
                .await
                .expect("approved")
                .into_inner()
                .conversion
        } else {
            let request = id::RejectConversionRequest {
                request_id: conversion.request_id.clone(),
                reason: "il documento non è leggibile".into(),
            };
            bo.reject_conversion(with_token(&bo_token, request))
                .await
                .expect("rejected")
                .into_inner()
                .conversion
        };
        decided.push(outcome.expect("conversion"));
    }
    assert_eq!(
        (decided[0].status, decided[0].rejection_reason.as_str()),
        (St::Rejected as i32, "il documento non è leggibile")
    );
    assert_eq!(decided[1].status, St::Approved as i32);
    let session = suite.login_with_pin(&cf, crate::auth::OWN_PIN).await.expect("login");
    assert_eq!(session.level, id::CredentialLevel::Dispositive as i32);
    suite.db.outbox_relayed().await;
    assert!(!suite.db.messages("PIN_CONVERSION_REJECTED").await.is_empty());
    assert!(suite.db.messages("PIN_CONVERSION_IN_REVIEW").await.len() >= 5);
    assert!(suite.db.messages("PIN_CONVERSION_STARTED").await.len() >= 5, "each start is told");
    let trail = suite.db.count("identity", "audit_events", &format!(
        "fiscal_code = '{cf}' AND action IN ('ApproveConversion', 'RejectConversion', 'DownloadConversionFile') AND operator_id = '{BACKOFFICE_ID}'"
    )).await;
    assert_eq!(trail, 6, "two reads (each started, then OK) and two decisions on the record");
}

#[tokio::test]
async fn a_guardians_request_always_goes_to_the_back_office() {
    let suite = spawn_suite().await;
    let (_, form, token) = ordinary_citizen(&suite, "Gallo", (2010, 3, 3)).await;
    let (guardian, guardian_form) = citizen_request("Gallo", "Marco", (1978, 9, 9), id::Sex::Male);
    let conversion = via_gateway(&suite)
        .await
        .start_pin_conversion(with_token(
            &token,
            id::StartPinConversionRequest { guardian_fiscal_code: guardian },
        ))
        .await
        .expect("started")
        .into_inner()
        .conversion
        .expect("conversion");
    let pdf = form_pdf(&suite, &token, &conversion.request_id).await.expect("form");
    let _ = form;
    let files = [(FORM, signed(pdf)), (SCAN, jpeg(5_000))];
    let queued = upload_through_gateway(
        &suite,
        &token,
        &conversion.request_id,
        document_of(&guardian_form),
        &files,
    )
    .await
    .expect("uploaded");
    assert_eq!(
        (queued.status, queued.failed_checks),
        (St::InReview as i32, vec!["GUARDIANSHIP".to_owned(), "DOCUMENT_NOT_VERIFIED".to_owned()])
    );
    assert!(!queued.guardian_fiscal_code.is_empty());
    suite.db.outbox_relayed().await;
    let told = suite.db.messages("PIN_CONVERSION_GUARDIAN_REVIEW").await;
    assert!(!told.is_empty(), "the notice says why");
}

#[tokio::test]
async fn uploads_over_the_limits_of_another_type_or_cut_off_leave_nothing_behind() {
    let suite = spawn_suite_with(|c| {
        c.identity.uploads.max_file_bytes = 100_000;
        c.identity.uploads.max_total_bytes = 150_000;
    })
    .await;
    let (_, form, token) = ordinary_citizen(&suite, "Costa", (1990, 2, 2)).await;
    let conversion = start(&suite, &token).await;
    let pdf = form_pdf(&suite, &token, &conversion.request_id).await.expect("form");
    let zip = b"PK\x03\x04 not a picture".repeat(100);
    let refused = [
        ("a file over its limit", vec![(FORM, pdf.clone()), (SCAN, jpeg(100_001))], "chunk.data"),
        ("files over the total", vec![(FORM, jpeg(90_000)), (SCAN, jpeg(90_000))], "chunk.data"),
        ("a ZIP for a document", vec![(FORM, pdf.clone()), (SCAN, zip)], "chunk.data"),
        ("no document", vec![(FORM, pdf.clone())], "chunk.file"),
    ];
    for (what, files, field) in refused {
        let status = upload_through_gateway(
            &suite,
            &token,
            &conversion.request_id,
            document_of(&form),
            &files,
        )
        .await
        .expect_err(what);
        assert_eq!(
            (status.code(), violated_fields(&status)),
            (Code::InvalidArgument, vec![field.to_owned()]),
            "{what}"
        );
    }
    let bad_metadata = id::IdentityDocument { r#type: 0, expires_on: None, ..document_of(&form) };
    let status = upload_through_gateway(
        &suite,
        &token,
        &conversion.request_id,
        bad_metadata,
        &[(FORM, pdf.clone())],
    )
    .await
    .expect_err("bad metadata");
    assert_eq!(
        violated_fields(&status),
        ["metadata.document.type", "metadata.document.expires_on"]
    );

    // Cut off: the client goes away half-way through the document.
    let mut messages = upload_messages(
        &conversion.request_id,
        document_of(&form),
        &[(FORM, pdf.clone()), (SCAN, jpeg(80_000))],
        16 * 1024,
    );
    messages.truncate(messages.len() - 2);
    let endless =
        futures::StreamExt::chain(futures::stream::iter(messages), futures::stream::pending());
    let mut client = via_gateway(&suite).await;
    let request = with_token(&token, endless);
    let call = tokio::spawn(async move { client.upload_conversion_documents(request).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    call.abort();
    eventually("the cut-off upload's parts removed", Duration::from_secs(5), || async {
        let temporary = suite.db.data_dir().join("blobs/tmp");
        stored_files(&suite).iter().all(|p| !p.starts_with(&temporary))
    })
    .await;
    let leftovers: Vec<_> = stored_files(&suite);
    assert!(
        leftovers.len() <= 1,
        "at most the signed form, complete and content-addressed: {leftovers:?}"
    );
    let still = via_gateway(&suite)
        .await
        .get_pin_conversion(with_token(&token, id::GetPinConversionRequest {}))
        .await;
    assert_eq!(
        still.expect("status").into_inner().conversion.expect("c").status,
        St::AwaitingDocuments as i32
    );
}

#[tokio::test]
async fn another_citizens_request_is_not_found_through_the_gateway_or_at_identity_itself() {
    let suite = spawn_suite().await;
    let (_, form, mine) = ordinary_citizen(&suite, "Ferri", (1985, 4, 4)).await;
    let (_, _, theirs) = ordinary_citizen(&suite, "Conti", (1986, 5, 5)).await;
    let conversion = start(&suite, &mine).await;
    for channel in [suite.gateway_channel().await, connect(suite.identity.addr).await] {
        let mut client = citizens(channel.clone());
        let download =
            id::DownloadConversionFormRequest { request_id: conversion.request_id.clone() };
        let refused = client
            .download_conversion_form(with_token(&theirs, download))
            .await
            .expect_err("not theirs");
        assert_eq!(refused.code(), Code::NotFound);
        let refused = upload(
            client.clone(),
            &theirs,
            &conversion.request_id,
            document_of(&form),
            &[(FORM, jpeg(100))],
        )
        .await
        .expect_err("not theirs");
        assert_eq!(refused.code(), Code::NotFound);
        let withdraw =
            id::WithdrawPinConversionRequest { request_id: conversion.request_id.clone() };
        let refused = client
            .withdraw_pin_conversion(with_token(&theirs, withdraw))
            .await
            .expect_err("not theirs");
        assert_eq!(refused.code(), Code::NotFound);
        let none =
            client.get_pin_conversion(with_token(&theirs, id::GetPinConversionRequest {})).await;
        assert_eq!(none.expect_err("they have none").code(), Code::NotFound);
        let queue = PinConversionBackOfficeServiceClient::new(channel)
            .list_pending_conversions(with_token(
                &theirs,
                id::ListPendingConversionsRequest::default(),
            ))
            .await
            .expect_err("citizens have no queue");
        assert_eq!(queue.code(), Code::PermissionDenied);
    }
    let simplified =
        suite.citizen_token(&crate::claims::nth_cf(3), sportello_platform::auth::Level::Simplified);
    let refused = via_gateway(&suite)
        .await
        .start_pin_conversion(with_token(&simplified, id::StartPinConversionRequest::default()))
        .await
        .expect_err("simplified PIN");
    assert_eq!(refused.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn conversion_rpcs_refuse_bad_input_by_field_and_the_back_office_rpcs_refuse_citizens() {
    let suite = spawn_suite().await;
    let (_, form, token) = ordinary_citizen(&suite, "Riva", (1982, 7, 7)).await;
    let conversion = start(&suite, &token).await;
    let not_an_id = || "not-a-request".to_owned();

    let refused = form_pdf(&suite, &token, &not_an_id()).await.expect_err("bad id");
    assert_eq!(violated_fields(&refused), ["request_id"]);
    let withdraw = id::WithdrawPinConversionRequest { request_id: not_an_id() };
    let refused = via_gateway(&suite)
        .await
        .withdraw_pin_conversion(with_token(&token, withdraw))
        .await
        .expect_err("bad id");
    assert_eq!(violated_fields(&refused), ["request_id"]);
    let refused = upload_through_gateway(&suite, &token, &not_an_id(), document_of(&form), &[])
        .await
        .expect_err("bad id");
    assert_eq!(violated_fields(&refused), ["request_id"]);
    let guardian = id::StartPinConversionRequest { guardian_fiscal_code: "RSSMRA".into() };
    let refused = via_gateway(&suite)
        .await
        .start_pin_conversion(with_token(&token, guardian))
        .await
        .expect_err("bad guardian");
    assert_eq!(violated_fields(&refused), ["guardian_fiscal_code"]);

    let (mut bo, staff) = backoffice(&suite).await;
    let page = id::ListPendingConversionsRequest { page_token: "garbage".into(), page_size: 5 };
    let refused = bo.list_pending_conversions(with_token(&staff, page)).await.expect_err("token");
    assert_eq!(violated_fields(&refused), ["page_token"]);
    let approve = id::ApproveConversionRequest { request_id: not_an_id() };
    let refused = bo.approve_conversion(with_token(&staff, approve)).await.expect_err("bad id");
    assert_eq!(violated_fields(&refused), ["request_id"]);
    let reject = id::RejectConversionRequest {
        request_id: conversion.request_id.clone(),
        reason: "  ".into(),
    };
    let refused = bo.reject_conversion(with_token(&staff, reject)).await.expect_err("no reason");
    assert_eq!(violated_fields(&refused), ["reason"]);
    let file =
        id::DownloadConversionFileRequest { request_id: conversion.request_id.clone(), file: 0 };
    let refused = bo.download_conversion_file(with_token(&staff, file)).await.expect_err("file");
    assert_eq!(violated_fields(&refused), ["file"]);
    let approve = id::ApproveConversionRequest { request_id: conversion.request_id.clone() };
    let early = bo.approve_conversion(with_token(&staff, approve.clone())).await;
    assert_eq!(reason(&early.expect_err("no documents yet")), "NOT_IN_REVIEW");

    // A citizen reaches none of the back office's RPCs, through the gateway or directly.
    for channel in [suite.gateway_channel().await, connect(suite.identity.addr).await] {
        let mut as_citizen = PinConversionBackOfficeServiceClient::new(channel);
        let refused = as_citizen
            .approve_conversion(with_token(&token, approve.clone()))
            .await
            .expect_err("a citizen approves");
        assert_eq!(refused.code(), Code::PermissionDenied);
        let file = id::DownloadConversionFileRequest {
            request_id: conversion.request_id.clone(),
            file: SCAN as i32,
        };
        let refused =
            as_citizen.download_conversion_file(with_token(&token, file)).await.expect_err("file");
        assert_eq!(refused.code(), Code::PermissionDenied);
    }
}
