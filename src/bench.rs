//! `sportello bench`: a closed-loop load generator for any Sportello deployment. Each scenario
//! runs the same load once straight at the service and once through the gateway, and prints
//! throughput, latency percentiles, the gateway/direct ratio, and the CPU time each process of
//! the deployment spent per call (see [`crate::cpu`]). Bounded in time and in clients,
//! and meant for loopback or a test deployment, never production.

use crate::cpu;
use identity_svc::domain::codice_fiscale::{compute, Sex};
use sportello_proto::claims::v1::claims_service_client::ClaimsServiceClient;
use sportello_proto::claims::v1::ListBenefitsRequest;
use sportello_proto::identity::v1 as id;
use sportello_proto::identity::v1::identity_service_client::IdentityServiceClient;
use sportello_proto::notify::v1::notify_service_client::NotifyServiceClient;
use sportello_proto::notify::v1::{Channel as NotifyChannel, EnqueueMessageRequest};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// What to drive.
    #[arg(value_enum, default_value = "list-benefits")]
    pub(crate) scenario: Scenario,
    /// The service itself; default: claims-svc (list-benefits) or identity-svc (request-pin) at
    /// their default addresses.
    #[arg(long)]
    pub(crate) direct: Option<String>,
    /// The gateway.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    pub(crate) gateway: String,
    /// Concurrent clients, each with one call in flight.
    #[arg(long, default_value_t = 32)]
    pub(crate) concurrency: usize,
    /// HTTP/2 connections the clients share.
    #[arg(long, default_value_t = 4)]
    pub(crate) connections: usize,
    /// How long each target is measured.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub(crate) duration: Duration,
    /// Unmeasured load before each measurement.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    pub(crate) warmup: Duration,
    /// Login scenarios: how many citizens to prepare (request a PIN, read its halves, set an
    /// own PIN). Each login picks the next one, so no citizen has many logins in flight.
    #[arg(long, default_value_t = 64)]
    pub(crate) citizens: usize,
    /// Login scenarios: notify-svc's database, where the bench sees when a citizen's PIN halves
    /// have been sent.
    #[arg(long, default_value = "sqlite://data/notify.sqlite")]
    pub(crate) notify_database_url: String,
    /// Login scenarios: notify-svc's data directory, whose local sinks hold what was delivered
    /// (the SMS in `outbox/sms.jsonl`, the letter in `spool/`), where the bench reads the halves.
    #[arg(long, default_value = "data")]
    pub(crate) data_dir: std::path::PathBuf,
    /// A process whose CPU time per call to print, as `name=PID` (repeatable). The processes
    /// listening on the addresses driven, and the other services of their `sportello up`, are
    /// found on their own when they run on this machine.
    #[arg(long = "pid", value_parser = crate::cpu::parse_pid)]
    pub(crate) pids: Vec<crate::cpu::Target>,
    /// Identity scenarios: a back-office user (password in $SPORTELLO_PASSWORD) to put the
    /// synthetic citizens on the register of residents first; without one their PIN requests
    /// wait for the contact center and send nothing, and the login scenarios cannot prepare.
    #[arg(long, env = "SPORTELLO_USERNAME")]
    pub(crate) backoffice_user: Option<String>,
    /// Notify scenario: where the bench's SMTP receiver listens.
    #[arg(long, default_value = "127.0.0.1:2525")]
    pub(crate) smtp_listen: std::net::SocketAddr,
    /// Click-day scenario: how many citizens to prepare (each on the registry, each logged in
    /// with the simplified PIN of a real PIN request) and let file one claim each.
    #[arg(long, default_value_t = 12_000)]
    pub(crate) claimants: usize,
    /// Watch scenario: the WatchMyClaims streams to hold open, four per citizen (the first
    /// `--streams / 4` of the `--claimants`, who do not take part in the click day).
    #[arg(long, default_value_t = 10_000)]
    pub(crate) streams: usize,
    /// Upload scenario: the size of each identity document's scan, in MB.
    #[arg(long, default_value_t = 20)]
    pub(crate) upload_mb: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Scenario {
    /// ClaimsService/ListBenefits, a cheap read.
    ListBenefits,
    /// IdentityService/RequestPin for new citizens: two argon2id hashes, three rows and two
    /// messages each, as on click day.
    RequestPin,
    /// IdentityService/LoginWithPin with citizens' own PINs: one argon2id verification and a
    /// new session each. Prepares its citizens first (see `--notify-database-url`).
    PinLogin,
    /// A PIN-login flood through the gateway while one client keeps calling GetProfile, a cheap
    /// authenticated RPC: how the cheap call fares when hashing saturates the CPUs.
    LoginFlood,
    /// NotifyService/EnqueueMessage of emails, as the other services call it (straight at
    /// notify-svc with a service token: the gateway refuses internal methods), then their
    /// delivery end to end to an SMTP receiver the bench runs (`--smtp-listen`; start the suite
    /// with `SPORTELLO_NOTIFY__EMAIL__RELAY=smtp://<that address>`).
    Notify,
    /// ClaimsService/SubmitClaim through the gateway by many citizens at once, as on 1 April
    /// 2020: puts `--claimants` citizens on the register of residents and the insured-positions
    /// registry (one in ten not eligible), logs each in with the simplified PIN of a real PIN
    /// request before the clock starts, then has every one file a claim; prints accepted
    /// claims/s, p50/p99, refusals by reason and each process's CPU per claim.
    Clickday,
    /// PinConversionService through the gateway: citizens with an ordinary PIN (prepared as for
    /// pin-login, `--citizens` of them) each open a PIN dispositivo request, download its form
    /// and upload it signed with a `--upload-mb` scan, `--concurrency` at a time; prints the MB/s
    /// of accepted uploads, identity-svc's RSS growth while they stream, and CPU per upload.
    Upload,
    /// PrivacyService/ExportMyData through the gateway for one citizen (prepared as for
    /// pin-login) with 1,000 audit rows and 50 messages, then 10,000 audit rows: time per
    /// export, CPU per export and each process's memory (see `crate::export_bench`).
    Export,
    /// ClaimsService/WatchMyClaims through the gateway: `--streams` held open by citizens
    /// prepared as for clickday (four each); prints the memory each stream costs the gateway
    /// and claims-svc, then runs the click day with the other `--claimants` while the back
    /// office approves the watched citizens' claims, and prints the time from each approval to
    /// its streams.
    Watch,
}

impl Scenario {
    fn default_direct(self) -> &'static str {
        match self {
            Scenario::ListBenefits => "http://127.0.0.1:50053",
            Scenario::RequestPin | Scenario::PinLogin | Scenario::LoginFlood | Scenario::Upload => {
                "http://127.0.0.1:50052"
            }
            Scenario::Notify | Scenario::Export => "http://127.0.0.1:50054",
            Scenario::Clickday | Scenario::Watch => "http://127.0.0.1:50053",
        }
    }
}

const SURNAMES: &[&str] = &[
    "Rossi", "Russo", "Ferrari", "Esposito", "Bianchi", "Romano", "Colombo", "Ricci", "Marino",
    "Greco", "Bruno", "Gallo", "Conti", "De Luca", "Mancini", "Costa", "Giordano", "Rizzo",
    "Lombardi", "Moretti",
];
const GIVEN_NAMES: &[&str] = &[
    "Mario",
    "Giulia",
    "Luca",
    "Francesca",
    "Marco",
    "Chiara",
    "Andrea",
    "Sara",
    "Giuseppe",
    "Valentina",
    "Paolo",
    "Elena",
    "Stefano",
    "Laura",
    "Davide",
    "Anna",
];

/// The `n`-th synthetic citizen, born in Rome between 1950 and 2001: a complete, valid PIN
/// request with a fiscal code that matches it.
pub(crate) fn citizen(n: u64) -> id::RequestPinRequest {
    let surname = SURNAMES[(n % SURNAMES.len() as u64) as usize];
    let given = GIVEN_NAMES[(n / 20 % GIVEN_NAMES.len() as u64) as usize];
    let born = chrono::NaiveDate::from_ymd_opt(1950, 1, 1).expect("date")
        + chrono::Days::new(n / 320 % 18_600);
    let female = n % 2 == 1;
    let sex = if female { Sex::Female } else { Sex::Male };
    use chrono::Datelike;
    id::RequestPinRequest {
        fiscal_code: compute(surname, given, born, sex, "H501"),
        personal_data: Some(id::PersonalData {
            surname: surname.into(),
            given_name: given.into(),
            birth_date: Some(id::Date {
                year: born.year(),
                month: born.month() as i32,
                day: born.day() as i32,
            }),
            sex: if female { id::Sex::Female } else { id::Sex::Male } as i32,
            birth_province: "RM".into(),
            birth_municipality: "Roma".into(),
            birth_country: String::new(),
        }),
        residence: Some(id::Residence {
            place: Some(id::residence::Place::Italy(id::ItalianAddress {
                street: "Via del Corso".into(),
                street_number: format!("{}", n % 400 + 1),
                postal_code: "00186".into(),
                province: "RM".into(),
                municipality: "Roma".into(),
            })),
        }),
        contacts: Some(id::Contacts {
            mobile_phone: format!("+39 333 {:07}", n % 10_000_000),
            email: format!("cittadino{n}@example.it"),
            preferred_time_slot: id::TimeSlot::Morning as i32,
            ..Default::default()
        }),
        first_half_channel: id::DeliveryChannel::Sms as i32,
    }
}

/// What one measurement found.
#[derive(Debug)]
pub(crate) struct Figures {
    pub(crate) ok: u64,
    pub(crate) errors: u64,
    pub(crate) elapsed: Duration,
    pub(crate) latencies_us: Vec<u64>,
}

impl Figures {
    pub(crate) fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    pub(crate) fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_us[i] as f64 / 1000.0
    }
}

pub(crate) async fn channels(url: &str, n: usize) -> anyhow::Result<Vec<Channel>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        out.push(Endpoint::from_shared(url.to_owned())?.tcp_nodelay(true).connect().await?);
    }
    Ok(out)
}

/// Puts synthetic citizens `from..from + count` on the register of residents, through the
/// gateway as the back office, so that their PIN requests issue PINs.
pub(crate) async fn register(args: &BenchArgs, from: u64, count: u64) -> anyhow::Result<()> {
    let Some(user) = &args.backoffice_user else {
        println!("(no --backoffice-user: the synthetic citizens are not on the register)");
        return Ok(());
    };
    let channel = Endpoint::from_shared(args.gateway.clone())?.connect().await?;
    let session = crate::import::login(channel.clone(), user).await?;
    let records: Vec<id::ResidentRecord> = (from..from + count)
        .map(|n| {
            let form = citizen(n);
            id::ResidentRecord {
                line: (n - from) as i64 + 2,
                fiscal_code: form.fiscal_code,
                personal_data: form.personal_data,
                residence: form.residence,
            }
        })
        .collect();
    crate::import::import_all(channel, &session.access_token, &records).await
}

/// Citizens with a PIN of their own, for the login scenarios.
pub(crate) type Prepared = Arc<Vec<(String, String)>>;

/// Requests PINs for `n` new citizens through the gateway, reads the halves from notify-svc's
/// database as the citizen would read the SMS and the letter, and completes first access.
/// The PIN half in the SMS `id` as the local SMS sink holds it ("… il suo PIN è AB12CD34.").
pub(crate) fn delivered_sms_half(data_dir: &std::path::Path, id: &str) -> anyhow::Result<String> {
    let lines = std::fs::read_to_string(data_dir.join("outbox/sms.jsonl"))?;
    let text = lines
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["message_id"] == id)
        .and_then(|l| l["text"].as_str().map(str::to_owned))
        .ok_or_else(|| anyhow::anyhow!("SMS {id} is not in the local sink"))?;
    let after = text.split_once(" è ").map(|(_, a)| a).unwrap_or_default();
    Ok(after.split(|c: char| c == '.' || c.is_whitespace()).next().unwrap_or_default().to_owned())
}

/// The PIN half printed in the box of the spooled letter `id`: the last line of its text.
pub(crate) fn spooled_letter_half(data_dir: &std::path::Path, id: &str) -> anyhow::Result<String> {
    let letter = std::fs::read(data_dir.join(format!("spool/{id}.pdf")))?;
    let text = notify_svc::transport::letter::text_of_pdf(&letter)?;
    let boxed = text
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .ok_or_else(|| anyhow::anyhow!("letter {id} has no boxed half"))?;
    Ok(boxed.to_owned())
}

/// notify-svc's database (`--notify-database-url`) and the name of its messages table there.
pub(crate) async fn notify_messages(
    args: &BenchArgs,
) -> anyhow::Result<(sqlx::AnyPool, &'static str)> {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&args.notify_database_url).await?;
    let table = if args.notify_database_url.starts_with("postgres") {
        "notify.messages"
    } else {
        "messages"
    };
    Ok((pool, table))
}

async fn prepare(args: &BenchArgs, n: usize, next: &AtomicU64) -> anyhow::Result<Prepared> {
    let (pool, table) = notify_messages(args).await?;
    let sql = format!(
        "SELECT id, template, status FROM {table} WHERE fiscal_code = $1 \
         AND template IN ('PIN_FIRST_HALF', 'PIN_SECOND_HALF_LETTER') ORDER BY created_at DESC"
    );
    let channel = Endpoint::from_shared(args.gateway.clone())?.connect().await?;
    let mut identity = IdentityServiceClient::new(channel);
    let mut out = Vec::with_capacity(n);
    for i in 0..n.max(1) {
        let form = citizen(next.fetch_add(1, Ordering::Relaxed));
        let cf = form.fiscal_code.clone();
        identity.request_pin(form).await?;
        // As the citizen would: wait for the SMS and the letter, then read them.
        let deadline = Instant::now() + Duration::from_secs(20);
        let (first, second) = loop {
            let mut sent = (None, None);
            for row in sqlx::query(&sql).bind(&cf).fetch_all(&pool).await? {
                use sqlx::Row;
                let (id, template, status): (String, String, String) =
                    (row.try_get("id")?, row.try_get("template")?, row.try_get("status")?);
                if status != "SENT" {
                    continue;
                }
                match template.as_str() {
                    "PIN_FIRST_HALF" => sent.0 = sent.0.or(Some(id)),
                    _ => sent.1 = sent.1.or(Some(id)),
                }
            }
            if let (Some(first), Some(second)) = sent {
                break (first, second);
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "no PIN delivered to a prepared citizen within 20 s (is notify-svc dispatching \
                     to its local sinks under {}?)",
                    args.data_dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let first = delivered_sms_half(&args.data_dir, &first)?;
        let second = spooled_letter_half(&args.data_dir, &second)?;
        let own = format!("K{i:06}Q");
        identity
            .complete_first_access(id::CompleteFirstAccessRequest {
                fiscal_code: cf.clone(),
                initial_pin: format!("{first}{second}"),
                new_pin: own.clone(),
            })
            .await?;
        out.push((cf, own));
    }
    Ok(Arc::new(out))
}

/// One call of the scenario; `next` numbers the synthetic citizens so each is new.
async fn call(
    scenario: Scenario,
    channel: &Channel,
    next: &AtomicU64,
    prepared: &Prepared,
) -> Result<(), tonic::Status> {
    match scenario {
        Scenario::PinLogin | Scenario::LoginFlood => {
            let n = next.fetch_add(1, Ordering::Relaxed) as usize;
            let (cf, pin) = &prepared[n % prepared.len().max(1)];
            let request = id::LoginWithPinRequest { fiscal_code: cf.clone(), pin: pin.clone() };
            IdentityServiceClient::new(channel.clone()).login_with_pin(request).await?;
        }
        // Clickday, Upload, Export and Watch run their own loops (`crate::clickday`,
        // `crate::upload_bench`, `crate::export_bench`, `crate::watch_bench`): here they are a
        // catalogue read.
        Scenario::ListBenefits
        | Scenario::Clickday
        | Scenario::Upload
        | Scenario::Export
        | Scenario::Watch => {
            ClaimsServiceClient::new(channel.clone()).list_benefits(ListBenefitsRequest {}).await?;
        }
        Scenario::RequestPin => {
            let n = next.fetch_add(1, Ordering::Relaxed);
            IdentityServiceClient::new(channel.clone()).request_pin(citizen(n)).await?;
        }
        Scenario::Notify => {
            let n = next.fetch_add(1, Ordering::Relaxed);
            let (token, _) = prepared.first().expect("a service token");
            let mut request = tonic::Request::new(notify_email(n));
            let bearer = format!("Bearer {token}")
                .parse()
                .map_err(|_| tonic::Status::internal("a token is not a header value"))?;
            request.metadata_mut().insert("authorization", bearer);
            NotifyServiceClient::new(channel.clone()).enqueue_message(request).await?;
        }
    }
    Ok(())
}

/// The `n`-th email of the notify scenario: the second half of a restored PIN, as identity-svc
/// sends it, so that what a secret costs (kept until the email is sent, then purged) is measured.
fn notify_email(n: u64) -> EnqueueMessageRequest {
    EnqueueMessageRequest {
        idempotency_key: format!("bench:notify:{n}"),
        fiscal_code: "RSSMRA85T10A562S".into(),
        channel: NotifyChannel::Email as i32,
        address: format!("cittadino{n}@example.it"),
        template: "PIN_RESTORED_SECOND_HALF".into(),
        secret_params: [("pin_half".to_owned(), format!("{:08X}", n.wrapping_mul(2_654_435_761)))]
            .into(),
        ..Default::default()
    }
}

/// A service token signed with identity-svc's key under `--data-dir`, as the services' own.
pub(crate) fn service_token(data_dir: &std::path::Path) -> anyhow::Result<String> {
    let key = data_dir.join("keys/session-ed25519.der");
    anyhow::ensure!(key.exists(), "no identity key at {} (see --data-dir)", key.display());
    let signer = identity_svc::keys::Signer::load_or_generate(&key)?;
    Ok(signer.service_token("bench")?)
}

/// The notify scenario: durable enqueues straight at notify-svc, then every email they made,
/// counted and timed as the bench's SMTP receiver takes it.
async fn notify(args: &BenchArgs, next: &Arc<AtomicU64>) -> anyhow::Result<()> {
    let receiver = notify_svc::testing::smtp::SmtpReceiver::start_on(args.smtp_listen).await?;
    let prepared: Prepared = Arc::new(vec![(service_token(&args.data_dir)?, String::new())]);
    let direct = args.direct.clone().unwrap_or_else(|| args.scenario.default_direct().into());
    let targets = cpu::discover(&[&direct], &args.pids);
    let start = Instant::now();
    let first = next.load(Ordering::Relaxed);
    let enqueues = measure("enqueue", &direct, args, next, &prepared, &targets).await?;
    let sent = next.load(Ordering::Relaxed) - first;
    // Emails of the warm-up and the measurement, each once (a retry reuses its Message-ID).
    let deadline = Instant::now() + Duration::from_secs(120);
    while (receiver.count() as u64) < sent && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let received = receiver.received();
    if received.is_empty() {
        anyhow::bail!(
            "no email arrived at {}: run the suite with SPORTELLO_NOTIFY__EMAIL__RELAY=smtp://{}",
            args.smtp_listen,
            args.smtp_listen
        );
    }
    let last = received.iter().map(|r| r.at).max().unwrap_or(start);
    let elapsed = last.duration_since(start);
    println!(
        "emails   {:<26} {:>9} {:>7} {:>10.0}   (accepted {sent}, all delivered: {})",
        format!("smtp://{}", args.smtp_listen),
        received.len(),
        sent.saturating_sub(received.len() as u64),
        received.len() as f64 / elapsed.as_secs_f64(),
        received.len() as u64 >= sent
    );
    println!(
        "durable enqueues/s {:.0} (p50 {:.2} ms, p99 {:.2} ms); emails delivered/s end to end {:.0}",
        enqueues.rate(),
        enqueues.percentile_ms(0.50),
        enqueues.percentile_ms(0.99),
        received.len() as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}

async fn drive(
    url: &str,
    args: &BenchArgs,
    run_for: Duration,
    next: &Arc<AtomicU64>,
    prepared: &Prepared,
) -> anyhow::Result<Figures> {
    let channels = channels(url, args.connections).await?;
    let start = Instant::now();
    let until = start + run_for;
    let scenario = args.scenario;
    let workers: Vec<_> = (0..args.concurrency.max(1))
        .map(|i| {
            let channel = channels[i % channels.len()].clone();
            let next = next.clone();
            let prepared = prepared.clone();
            tokio::spawn(async move {
                let (mut ok, mut errors, mut lat) = (0u64, 0u64, Vec::new());
                while Instant::now() < until {
                    let t0 = Instant::now();
                    match call(scenario, &channel, &next, &prepared).await {
                        Ok(_) => {
                            ok += 1;
                            lat.push(t0.elapsed().as_micros() as u64);
                        }
                        Err(e) => {
                            errors += 1;
                            if errors == 1 {
                                eprintln!("first error: {:?} {}", e.code(), e.message());
                            }
                        }
                    }
                }
                (ok, errors, lat)
            })
        })
        .collect();
    let mut figures =
        Figures { ok: 0, errors: 0, elapsed: Duration::ZERO, latencies_us: Vec::new() };
    for w in workers {
        let (ok, errors, lat) = w.await?;
        figures.ok += ok;
        figures.errors += errors;
        figures.latencies_us.extend(lat);
    }
    figures.elapsed = start.elapsed();
    figures.latencies_us.sort_unstable();
    Ok(figures)
}

async fn measure(
    label: &str,
    url: &str,
    args: &BenchArgs,
    next: &Arc<AtomicU64>,
    prepared: &Prepared,
    targets: &[cpu::Target],
) -> anyhow::Result<Figures> {
    drive(url, args, args.warmup, next, prepared).await?;
    let before = cpu::snapshot(targets);
    let f = drive(url, args, args.duration, next, prepared).await?;
    println!(
        "{label:<8} {url:<26} {:>9} {:>7} {:>10.0} {:>9.2} {:>9.2}",
        f.ok,
        f.errors,
        f.rate(),
        f.percentile_ms(0.50),
        f.percentile_ms(0.99)
    );
    cpu::report(targets, &before, f.ok + f.errors, f.elapsed);
    Ok(f)
}

/// The login flood, with a probe that calls GetProfile every 100 ms through the gateway (well
/// inside one principal's rate limit).
async fn flood(args: &BenchArgs, next: &Arc<AtomicU64>, prepared: &Prepared) -> anyhow::Result<()> {
    let (cf, pin) = prepared.first().cloned().ok_or_else(|| anyhow::anyhow!("no citizens"))?;
    let channel = Endpoint::from_shared(args.gateway.clone())?.connect().await?;
    let session = IdentityServiceClient::new(channel.clone())
        .login_with_pin(id::LoginWithPinRequest { fiscal_code: cf, pin })
        .await?
        .into_inner()
        .session
        .ok_or_else(|| anyhow::anyhow!("no session"))?;
    let token: tonic::metadata::MetadataValue<_> =
        format!("Bearer {}", session.access_token).parse()?;
    let until = Instant::now() + args.warmup + args.duration;
    let probe = tokio::spawn(async move {
        let mut client = IdentityServiceClient::new(channel);
        let mut latencies = Vec::new();
        let mut errors = 0u64;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        while Instant::now() < until {
            tick.tick().await;
            let mut request = tonic::Request::new(id::GetProfileRequest {});
            request.metadata_mut().insert("authorization", token.clone());
            let t0 = Instant::now();
            match client.get_profile(request).await {
                Ok(_) => latencies.push(t0.elapsed().as_micros() as u64),
                Err(_) => errors += 1,
            }
        }
        (latencies, errors)
    });
    let targets = cpu::discover(&[&args.gateway], &args.pids);
    drive(&args.gateway, args, args.warmup, next, prepared).await?;
    let before = cpu::snapshot(&targets);
    let logins = drive(&args.gateway, args, args.duration, next, prepared).await?;
    let (mut latencies, probe_errors) = probe.await?;
    latencies.sort_unstable();
    let probe = Figures {
        ok: latencies.len() as u64,
        errors: probe_errors,
        elapsed: args.duration,
        latencies_us: latencies,
    };
    println!(
        "logins   {:<26} {:>9} {:>7} {:>10.0} {:>9.2} {:>9.2}",
        args.gateway,
        logins.ok,
        logins.errors,
        logins.rate(),
        logins.percentile_ms(0.50),
        logins.percentile_ms(0.99)
    );
    cpu::report(&targets, &before, logins.ok + logins.errors, logins.elapsed);
    println!(
        "profile  {:<26} {:>9} {:>7} {:>10} {:>9.2} {:>9.2}",
        "(GetProfile every 100 ms)",
        probe.ok,
        probe.errors,
        "-",
        probe.percentile_ms(0.50),
        probe.percentile_ms(0.99)
    );
    Ok(())
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        println!(
            "{:?}: {} concurrent clients over {} connections, {:?} per target (after {:?} warm-up)",
            args.scenario, args.concurrency, args.connections, args.duration, args.warmup
        );
        println!(
            "{:<8} {:<26} {:>9} {:>7} {:>10} {:>9} {:>9}",
            "target", "address", "requests", "errors", "req/s", "p50 ms", "p99 ms"
        );
        // Citizens are numbered from a random start, so a second run meets new ones too.
        let next = Arc::new(AtomicU64::new(rand::random::<u32>() as u64 * 1_000_000));
        if args.scenario == Scenario::Clickday {
            return crate::clickday::run(&args, next.load(Ordering::Relaxed)).await;
        }
        if args.scenario == Scenario::Watch {
            return crate::watch_bench::run(&args, next.load(Ordering::Relaxed)).await;
        }
        // `prepare` takes the citizens from here on, in order.
        let first = next.load(Ordering::Relaxed);
        if args.scenario == Scenario::Export {
            register(&args, first, 1).await?;
            let prepared = prepare(&args, 1, &next).await?;
            return crate::export_bench::run(&args, &prepared).await;
        }
        if !matches!(args.scenario, Scenario::ListBenefits | Scenario::Notify) {
            register(&args, next.load(Ordering::Relaxed), args.citizens as u64 + 30_000).await?;
        }
        let prepared = match args.scenario {
            Scenario::PinLogin | Scenario::LoginFlood | Scenario::Upload => {
                prepare(&args, args.citizens, &next).await?
            }
            _ => Arc::new(Vec::new()),
        };
        if args.scenario == Scenario::Upload {
            return crate::upload_bench::run(&args, &prepared, first).await;
        }
        if args.scenario == Scenario::LoginFlood {
            return flood(&args, &next, &prepared).await;
        }
        if args.scenario == Scenario::Notify {
            return notify(&args, &next).await;
        }
        let direct = args.direct.clone().unwrap_or_else(|| args.scenario.default_direct().into());
        let targets = cpu::discover(&[&direct, &args.gateway], &args.pids);
        let direct = measure("direct", &direct, &args, &next, &prepared, &targets).await?;
        let gateway = measure("gateway", &args.gateway, &args, &next, &prepared, &targets).await?;
        println!("gateway/direct throughput: {:.1}%", 100.0 * gateway.rate() / direct.rate());
        if args.scenario == Scenario::PinLogin {
            let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
            println!(
                "PIN logins per core ({cores} cores on this machine): direct {:.1}, gateway {:.1}",
                direct.rate() / cores as f64,
                gateway.rate() / cores as f64
            );
        }
        Ok(())
    })
}
