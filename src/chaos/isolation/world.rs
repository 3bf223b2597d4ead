//! The population the isolation scenario works on, made as it would be for real: citizens on the
//! register of residents and the insured-positions registry, each with a PIN of their own (the
//! first half read from the SMS sink, the second from the letter in the print spool, first access
//! completed, then a login), claims filed by them or by the patronato under a mandate (some
//! mandates revoked afterwards), PIN dispositivo requests, the messages all this sent, and a
//! payment batch of the back office.

use super::super::suite::Suite;
use crate::bench;
use anyhow::Context as _;
use sportello_platform::auth::{Level, Role};
use sportello_proto::claims::v1 as cl;
use sportello_proto::claims::v1::claims_back_office_service_client::ClaimsBackOfficeServiceClient;
use sportello_proto::claims::v1::claims_service_client::ClaimsServiceClient;
use sportello_proto::identity::v1 as id;
use sportello_proto::identity::v1::identity_service_client::IdentityServiceClient;
use sportello_proto::identity::v1::pin_conversion_back_office_service_client::PinConversionBackOfficeServiceClient as ConversionBackOffice;
use sportello_proto::identity::v1::pin_conversion_service_client::PinConversionServiceClient;
use sportello_proto::notify::v1 as nt;
use sportello_proto::notify::v1::notify_service_client::NotifyServiceClient;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};

/// One citizen of the run and what is theirs.
#[derive(Debug)]
pub struct Citizen {
    pub cf: String,
    /// Their own 8-character PIN (nobody else may change it).
    pub pin: String,
    pub token: String,
    /// The level of their session: dispositive once the back office granted a PIN dispositivo.
    pub level: Level,
    pub pin_request: String,
    /// The PIN request form they filed (what the contact center files again for them).
    pub form: id::RequestPinRequest,
    pub claims: Vec<String>,
    pub messages: Vec<String>,
    pub conversion: Option<String>,
    /// Mandates they gave the patronato (live or revoked).
    pub mandates: Vec<String>,
}

/// A staff member of the demo accounts, logged in.
#[derive(Debug)]
pub struct Staff {
    pub username: String,
    pub password: String,
    pub token: String,
    pub level: Level,
}

/// Everything the scenario knows, and what the calls it made did (the ground truth the answers
/// and the databases are checked against).
#[derive(Debug)]
pub struct World {
    pub channel: Channel,
    pub citizens: Vec<Citizen>,
    pub staff: HashMap<Role, Staff>,
    /// A valid fiscal code nobody of the run holds.
    pub outsider: String,
    /// Citizens who hold a live mandate with the patronato.
    pub mandated: HashSet<String>,
    /// Claims the patronato filed, each under a mandate live at the time.
    pub patronato_claims: HashSet<String>,
    /// Which citizen a claim, a message, a conversion request or a mandate belongs to.
    pub owner: HashMap<String, usize>,
    pub batches: Vec<String>,
    pub confirmed_batches: HashSet<String>,
    /// Claims whose citizen moved their payment to cash at the post office.
    pub paid_in_cash: HashSet<String>,
    /// Writes that their owner made (or, for decisions, the back office): anything else found
    /// changed in the databases afterwards is a cross-citizen write.
    pub withdrawn_claims: HashSet<String>,
    pub withdrawn_conversions: HashSet<String>,
    pub revoked_mandates: HashSet<String>,
}

pub fn bearer<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

fn level_of(session: &id::Session) -> Level {
    match id::CredentialLevel::try_from(session.level) {
        Ok(id::CredentialLevel::Dispositive) => Level::Dispositive,
        Ok(id::CredentialLevel::Ordinary) => Level::Ordinary,
        _ => Level::Simplified,
    }
}

/// The benefit every claim of the run is for (one per person: art. 31).
const BENEFIT: &str = "PROFESSIONISTI_COCOCO";

pub fn claim(cf: &str, for_other: bool, key: &str) -> cl::SubmitClaimRequest {
    cl::SubmitClaimRequest {
        benefit_code: BENEFIT.into(),
        fiscal_code: if for_other { cf.into() } else { String::new() },
        idempotency_key: key.into(),
        ..crate::clickday::claim(cf)
    }
}

/// The databases of the suite, read as the checks need them.
pub struct Databases {
    pools: HashMap<&'static str, sqlx::AnyPool>,
    postgres: bool,
}

impl Databases {
    pub async fn open(suite: &Suite) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let mut pools = HashMap::new();
        for service in ["identity", "claims", "notify"] {
            let url = match suite.database_url() {
                Some(url) => url.to_owned(),
                None => sportello_platform::db::sqlite_url(&suite.data_dir(), service),
            };
            let pool = sqlx::pool::PoolOptions::<sqlx::Any>::new()
                .max_connections(2)
                .connect(&url)
                .await
                .map_err(|e| anyhow::anyhow!("opening {service}'s database {url}: {e:?}"))?;
            pools.insert(service, pool);
        }
        Ok(Self { pools, postgres: suite.database_url().is_some() })
    }

    pub fn pool(&self, service: &str) -> &sqlx::AnyPool {
        &self.pools[service]
    }

    /// `table` of `service` as a query names it (each service has a schema of its own on
    /// PostgreSQL, a file of its own on SQLite).
    pub fn table(&self, service: &str, table: &str) -> String {
        if self.postgres {
            format!("{service}.{table}")
        } else {
            table.to_owned()
        }
    }
}

/// Waits until notify-svc has sent both halves of each citizen's PIN; their message ids.
async fn halves_sent(
    db: &Databases,
    cfs: &HashSet<String>,
) -> anyhow::Result<HashMap<String, (String, String)>> {
    let sql = format!(
        "SELECT fiscal_code, id, template FROM {} WHERE status IN ('SENT', 'DELIVERED') \
         AND template IN ('PIN_FIRST_HALF', 'PIN_SECOND_HALF_LETTER')",
        db.table("notify", "messages")
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut first = HashMap::new();
        let mut second = HashMap::new();
        for row in sqlx::query(&sql).fetch_all(db.pool("notify")).await? {
            use sqlx::Row;
            let cf: String = row.try_get("fiscal_code")?;
            if !cfs.contains(&cf) {
                continue;
            }
            let (message, template): (String, String) =
                (row.try_get("id")?, row.try_get("template")?);
            if template == "PIN_FIRST_HALF" {
                first.insert(cf, message);
            } else {
                second.insert(cf, message);
            }
        }
        let both: HashMap<String, (String, String)> = first
            .into_iter()
            .filter_map(|(cf, a)| second.get(&cf).map(|b| (cf.clone(), (a, b.clone()))))
            .collect();
        if both.len() == cfs.len() {
            return Ok(both);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} of {} citizens' PIN halves sent after 2 minutes",
            both.len(),
            cfs.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Makes the population: `n` citizens numbered from `from` (a valid fiscal code each).
pub async fn make(suite: &Suite, db: &Databases, from: u64, n: usize) -> anyhow::Result<World> {
    let started = Instant::now();
    let channel = Endpoint::from_shared(suite.url("gateway"))?.connect().await?;
    let mut identity = IdentityServiceClient::new(channel.clone());
    let mut staff = HashMap::new();
    for account in suite.staff() {
        let login = id::LoginStaffRequest {
            username: account.username.clone(),
            password: account.password.clone(),
        };
        let reply = identity.login_staff(login).await.context("staff login")?;
        let session = reply.into_inner().session.context("session")?;
        let role = match account.role {
            crate::staff::StaffRole::Operator => Role::Operator,
            crate::staff::StaffRole::Patronato => Role::Patronato,
            crate::staff::StaffRole::Backoffice => Role::Backoffice,
        };
        let level = level_of(&session);
        let member = Staff {
            username: account.username.clone(),
            password: account.password.clone(),
            token: session.access_token,
            level,
        };
        staff.insert(role, member);
    }
    for role in [Role::Operator, Role::Patronato, Role::Backoffice] {
        anyhow::ensure!(staff.contains_key(&role), "no demo {role:?} account");
    }
    let backoffice = staff[&Role::Backoffice].token.clone();
    let patronato = staff[&Role::Patronato].token.clone();

    // On the register of residents (so that PINs are issued) and on the registry (so that
    // claims are accepted); nobody among them is a pensioner.
    let numbers: Vec<u64> = (from..).filter(|n| n % 10 != 9).take(n).collect();
    let forms: Vec<id::RequestPinRequest> = numbers.iter().map(|&i| bench::citizen(i)).collect();
    let records: Vec<id::ResidentRecord> = forms
        .iter()
        .enumerate()
        .map(|(line, form)| id::ResidentRecord {
            line: line as i64 + 2,
            fiscal_code: form.fiscal_code.clone(),
            personal_data: form.personal_data.clone(),
            residence: form.residence.clone(),
        })
        .collect();
    crate::import::import_all(channel.clone(), &backoffice, &records).await?;
    let pairs: Vec<(u64, String)> =
        numbers.iter().zip(&forms).map(|(&i, f)| (i, f.fiscal_code.clone())).collect();
    crate::clickday::import_registry(channel.clone(), &backoffice, &pairs).await?;
    let outsider = bench::citizen(numbers.last().copied().unwrap_or(from) + 1_000).fiscal_code;

    // A PIN each, as the citizen gets it.
    let requests = crate::clickday::in_parallel(forms.clone(), |form| {
        let mut identity = identity.clone();
        async move {
            let reply = identity.request_pin(form.clone()).await.context("PIN request")?;
            Ok((form.fiscal_code.clone(), reply.into_inner().request_id, form))
        }
    })
    .await?;
    let cfs: HashSet<String> = forms.iter().map(|f| f.fiscal_code.clone()).collect();
    let sent = halves_sent(db, &cfs).await?;
    let data = suite.data_dir();
    let mut halves = Vec::new();
    for (cf, request, form) in requests {
        let (first, second) = &sent[&cf];
        let first = bench::delivered_sms_half(&data, first)?;
        let second = bench::spooled_letter_half(&data, second)?;
        halves.push((cf, request, form, format!("{first}{second}")));
    }
    let mut citizens = crate::clickday::in_parallel(halves, |(cf, request, form, initial)| {
        let mut identity = identity.clone();
        async move {
            // Letters and digits, not a common PIN; one per citizen.
            let pin = format!("Q{}", &cf[9..16]);
            identity
                .complete_first_access(id::CompleteFirstAccessRequest {
                    fiscal_code: cf.clone(),
                    initial_pin: initial,
                    new_pin: pin.clone(),
                })
                .await
                .context("first access")?;
            let login = id::LoginWithPinRequest { fiscal_code: cf.clone(), pin: pin.clone() };
            let session = identity.login_with_pin(login).await.context("PIN login")?;
            let session = session.into_inner().session.context("session")?;
            Ok(Citizen {
                level: level_of(&session),
                cf,
                pin,
                token: session.access_token,
                pin_request: request,
                form,
                claims: Vec::new(),
                messages: Vec::new(),
                conversion: None,
                mandates: Vec::new(),
            })
        }
    })
    .await?;
    citizens.sort_by(|a, b| a.cf.cmp(&b.cf));

    let mut world = World {
        channel: channel.clone(),
        citizens,
        staff,
        outsider,
        mandated: HashSet::new(),
        patronato_claims: HashSet::new(),
        owner: HashMap::new(),
        batches: Vec::new(),
        confirmed_batches: HashSet::new(),
        paid_in_cash: HashSet::new(),
        withdrawn_claims: HashSet::new(),
        withdrawn_conversions: HashSet::new(),
        revoked_mandates: HashSet::new(),
    };

    // A third file through the patronato under a mandate, half of whom revoke it afterwards;
    // the others file themselves. Half ask for a PIN dispositivo.
    let mut claims = ClaimsServiceClient::new(channel.clone());
    let mut conversions = PinConversionServiceClient::new(channel.clone());
    // A small photo of the document: a real JPEG, which identity-svc decodes.
    let photo = image::RgbImage::from_fn(320, 200, |x, y| image::Rgb([x as u8, y as u8, 90]));
    let mut scan = Vec::new();
    photo.write_to(&mut std::io::Cursor::new(&mut scan), image::ImageFormat::Jpeg)?;
    for i in 0..world.citizens.len() {
        let cf = world.citizens[i].cf.clone();
        let token = world.citizens[i].token.clone();
        let receipt = if i % 3 == 0 {
            let mandate = id_of_mandate(
                claims
                    .register_mandate(bearer(
                        &patronato,
                        cl::RegisterMandateRequest {
                            fiscal_code: cf.clone(),
                            signed_form_reference: format!("MOD-{i}"),
                        },
                    ))
                    .await
                    .context("registering a mandate")?
                    .into_inner(),
            )?;
            world.mandated.insert(cf.clone());
            world.owner.insert(mandate.clone(), i);
            world.citizens[i].mandates.push(mandate);
            let form = claim(&cf, true, &format!("iso-{cf}"));
            let receipt = claims.submit_claim(bearer(&patronato, form)).await;
            let receipt = receipt.context("the patronato filing")?.into_inner().receipt;
            let receipt = receipt.context("receipt")?;
            world.patronato_claims.insert(receipt.claim_id.clone());
            receipt
        } else {
            let form = claim(&cf, false, &format!("iso-{cf}"));
            let receipt = claims.submit_claim(bearer(&token, form)).await;
            receipt.context("a citizen filing")?.into_inner().receipt.context("receipt")?
        };
        world.owner.insert(receipt.claim_id.clone(), i);
        world.citizens[i].claims.push(receipt.claim_id);
        if i % 6 == 0 {
            let mandate = world.citizens[i].mandates[0].clone();
            let request = cl::RevokeMandateRequest { mandate_id: mandate.clone() };
            claims.revoke_mandate(bearer(&token, request)).await.context("revoking")?;
            world.revoked_mandates.insert(mandate);
            world.mandated.remove(&cf);
        }
        if i % 2 == 1 {
            let request = id::StartPinConversionRequest { guardian_fiscal_code: String::new() };
            let started = conversions.start_pin_conversion(bearer(&token, request)).await;
            let conversion = started.context("a PIN dispositivo request")?.into_inner();
            let conversion = conversion.conversion.context("conversion")?;
            let form = world.citizens[i].form.clone();
            upload(&mut conversions, &token, &form, &conversion, &scan).await?;
            world.owner.insert(conversion.request_id.clone(), i);
            world.citizens[i].conversion = Some(conversion.request_id.clone());
            // Every other one is granted: their PIN becomes dispositivo.
            if i % 4 == 1 {
                let request = id::ApproveConversionRequest { request_id: conversion.request_id };
                ConversionBackOffice::new(channel.clone())
                    .approve_conversion(bearer(&backoffice, request))
                    .await
                    .context("granting a PIN dispositivo")?;
                world.login(i).await?;
            }
        }
    }

    // The back office approves some of what waits for it and orders a payment batch.
    let mut back = ClaimsBackOfficeServiceClient::new(channel.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut queue = Vec::new();
    while Instant::now() < deadline {
        let request = cl::ListReviewQueueRequest { page_size: 500, page_token: String::new() };
        queue = back.list_review_queue(bearer(&backoffice, request)).await?.into_inner().claims;
        let statuses = list_statuses(&mut claims, &world).await?;
        if statuses.iter().all(|&s| s != cl::ClaimStatus::Submitted) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for c in queue.iter().filter(|c| cfs.contains(&c.fiscal_code)).step_by(2) {
        let Some(receipt) = &c.receipt else { continue };
        let request = cl::DecideClaimRequest {
            claim_id: receipt.claim_id.clone(),
            decision: cl::Decision::Approve as i32,
            reason: String::new(),
            note: "isolation scenario".into(),
        };
        back.decide_claim(bearer(&backoffice, request)).await.context("approving")?;
    }
    let request = cl::CreatePaymentBatchRequest { max_claims: 0, execution_date: None };
    if let Ok(batch) = back.create_payment_batch(bearer(&backoffice, request)).await {
        world.batches.push(batch.into_inner().batch_id);
    }

    // What was sent to each of them.
    let mut notify = NotifyServiceClient::new(channel.clone());
    for i in 0..world.citizens.len() {
        let request = nt::ListMyMessagesRequest { page_size: 200, page_token: String::new() };
        let token = world.citizens[i].token.clone();
        let mine = notify.list_my_messages(bearer(&token, request)).await?.into_inner().messages;
        for m in mine {
            world.owner.insert(m.message_id.clone(), i);
            world.citizens[i].messages.push(m.message_id);
        }
    }
    println!(
        "  population: {} citizens with a PIN of their own ({} dispositivo), {} claims ({} by the \
         patronato, {} mandates revoked), {} PIN dispositivo requests, {} messages, {} payment \
         batch(es) in {:.0} s",
        world.citizens.len(),
        world.citizens.iter().filter(|c| c.level == Level::Dispositive).count(),
        world.citizens.iter().map(|c| c.claims.len()).sum::<usize>(),
        world.patronato_claims.len(),
        world.revoked_mandates.len(),
        world.citizens.iter().filter(|c| c.conversion.is_some()).count(),
        world.citizens.iter().map(|c| c.messages.len()).sum::<usize>(),
        world.batches.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(world)
}

impl World {
    /// Everyone logs in again: session tokens last minutes, a full run longer.
    pub async fn refresh_sessions(&mut self) -> anyhow::Result<()> {
        for i in 0..self.citizens.len() {
            self.login(i).await?;
        }
        let mut identity = IdentityServiceClient::new(self.channel.clone());
        for member in self.staff.values_mut() {
            let login = id::LoginStaffRequest {
                username: member.username.clone(),
                password: member.password.clone(),
            };
            let reply = identity.login_staff(login).await.context("staff login")?;
            member.token = reply.into_inner().session.context("session")?.access_token;
        }
        Ok(())
    }

    /// Citizen `i` logs in again with their PIN (their sessions ended, or their level changed).
    pub async fn login(&mut self, i: usize) -> anyhow::Result<()> {
        let c = &self.citizens[i];
        let login = id::LoginWithPinRequest { fiscal_code: c.cf.clone(), pin: c.pin.clone() };
        let mut identity = IdentityServiceClient::new(self.channel.clone());
        let session = identity.login_with_pin(login).await.context("PIN login")?;
        let session = session.into_inner().session.context("session")?;
        self.citizens[i].level = level_of(&session);
        self.citizens[i].token = session.access_token;
        Ok(())
    }
}

/// The signed form and a scan of the identity document, uploaded as the citizen would: the
/// request then waits for the back office (`sportello up` has no document registry).
async fn upload(
    client: &mut PinConversionServiceClient<Channel>,
    token: &str,
    form: &id::RequestPinRequest,
    conversion: &id::PinConversion,
    scan: &[u8],
) -> anyhow::Result<()> {
    use id::upload_conversion_documents_request::Part;
    let (signed, document) =
        crate::upload_bench::signed_form_and_document(&conversion.request_number, form)?;
    let chunk = |file: id::ConversionFile, data: &[u8]| id::UploadConversionDocumentsRequest {
        part: Some(Part::Chunk(id::FileChunk { file: file as i32, data: data.to_vec() })),
    };
    let mut messages = vec![id::UploadConversionDocumentsRequest {
        part: Some(Part::Metadata(id::UploadMetadata {
            request_id: conversion.request_id.clone(),
            document: Some(document),
        })),
    }];
    messages.extend(signed.chunks(64 * 1024).map(|c| chunk(id::ConversionFile::SignedForm, c)));
    messages.extend(scan.chunks(64 * 1024).map(|c| chunk(id::ConversionFile::IdentityDocument, c)));
    let done = client
        .upload_conversion_documents(bearer(token, futures::stream::iter(messages)))
        .await
        .context("uploading the signed form and the document")?
        .into_inner();
    let status = done.conversion.map(|c| c.status()).unwrap_or_default();
    anyhow::ensure!(
        status == id::PinConversionStatus::InReview,
        "an upload left its request {status:?}, not waiting for the back office"
    );
    Ok(())
}

fn id_of_mandate(reply: cl::RegisterMandateResponse) -> anyhow::Result<String> {
    Ok(reply.mandate.context("mandate")?.mandate_id)
}

/// The status of every citizen's claims, as each citizen sees them.
async fn list_statuses(
    claims: &mut ClaimsServiceClient<Channel>,
    world: &World,
) -> anyhow::Result<Vec<cl::ClaimStatus>> {
    let mut out = Vec::new();
    for c in &world.citizens {
        let request = cl::ListClaimsRequest {
            fiscal_code: String::new(),
            page_size: 50,
            page_token: String::new(),
        };
        let page = claims.list_claims(bearer(&c.token, request)).await?.into_inner();
        out.extend(page.claims.iter().map(|c| c.status()));
    }
    Ok(out)
}
