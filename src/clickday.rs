//! `sportello bench clickday`: 1 April 2020 on this machine. Before the clock starts, a
//! population of citizens is put on the register of residents and on the insured-positions
//! registry (one in ten a pensioner, who is refused), and each logs in for real: a PIN request,
//! the first half read from the SMS notify-svc delivered, a simplified-PIN login. Then every
//! citizen files one claim through the gateway at once, and the bench prints accepted claims/s,
//! latency percentiles, refusals by reason, and each process's CPU time per claim.

use crate::bench::{self, BenchArgs, Figures};
use crate::cpu;
use anyhow::Context as _;
use futures::StreamExt as _;
use sportello_proto::claims::v1 as cl;
use sportello_proto::claims::v1::claims_back_office_service_client::ClaimsBackOfficeServiceClient;
use sportello_proto::claims::v1::claims_service_client::ClaimsServiceClient;
use sportello_proto::identity::v1 as id;
use sportello_proto::identity::v1::identity_service_client::IdentityServiceClient;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};

/// Calls in flight while preparing (PIN requests, logins).
const PREPARING: usize = 32;

/// The registry row of the `n`-th synthetic citizen: a professional with a VAT number in the
/// Gestione separata, or (one in ten) a pensioner, whom art. 27 excludes.
fn registry_row(cf: &str, n: u64) -> String {
    let pensioner = u8::from(n % 10 == 9);
    format!("{cf},GESTIONE_SEPARATA:2012-01-01:,2012-01-01,,{pensioner}\n")
}

pub(crate) fn bearer<T>(token: &str, message: T) -> anyhow::Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse()?);
    Ok(request)
}

/// Runs `each` over `items` with [`PREPARING`] calls in flight, failing on the first error.
pub(crate) async fn in_parallel<T, F, Fut, R>(items: Vec<T>, each: F) -> anyhow::Result<Vec<R>>
where
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<R>>,
{
    futures::stream::iter(items.into_iter().map(each))
        .buffer_unordered(PREPARING)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// Imports `csv` (the insured-positions registry's columns) as the back office with `token`,
/// in chunks as a file would stream; every row must be taken.
pub(crate) async fn import_registry_csv(
    channel: Channel,
    token: &str,
    csv: String,
) -> anyhow::Result<()> {
    let chunks: Vec<cl::ImportRegistryRequest> = csv
        .into_bytes()
        .chunks(256 * 1024)
        .map(|c| cl::ImportRegistryRequest { chunk: c.to_vec() })
        .collect();
    let reply = ClaimsBackOfficeServiceClient::new(channel)
        .import_registry(bearer(token, futures::stream::iter(chunks))?)
        .await
        .context("importing the registry")?
        .into_inner();
    anyhow::ensure!(reply.rows_rejected == 0, "registry rows refused: {:?}", reply.errors);
    Ok(())
}

pub(crate) async fn import_registry(
    channel: Channel,
    token: &str,
    citizens: &[(u64, String)],
) -> anyhow::Result<()> {
    let mut csv = String::from("fiscal_code,schemes,vat_from,vat_to,pensioner\n");
    for (n, cf) in citizens {
        csv.push_str(&registry_row(cf, *n));
    }
    let rows = citizens.len();
    let started = Instant::now();
    import_registry_csv(channel, token, csv).await?;
    println!(
        "registry: {rows} rows imported in {:.2} s ({:.0} rows/s)",
        started.elapsed().as_secs_f64(),
        rows as f64 / started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Waits until notify-svc has delivered every citizen's first half and has nothing left to
/// send (so that its dispatch does not run during the measurement); returns each citizen's
/// first-half message id.
async fn first_halves_sent(
    args: &BenchArgs,
    citizens: &HashSet<String>,
) -> anyhow::Result<HashMap<String, String>> {
    let (pool, table) = bench::notify_messages(args).await?;
    let sent = format!(
        "SELECT fiscal_code, id FROM {table} WHERE template = 'PIN_FIRST_HALF' AND status IN ('SENT', 'DELIVERED')"
    );
    let waiting = format!("SELECT COUNT(*) FROM {table} WHERE status IN ('QUEUED', 'SENDING')");
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let mut found = HashMap::new();
        for row in sqlx::query(&sent).fetch_all(&pool).await? {
            use sqlx::Row;
            let cf: String = row.try_get("fiscal_code")?;
            if citizens.contains(&cf) {
                found.insert(cf, row.try_get("id")?);
            }
        }
        let left: i64 = sqlx::query_scalar(&waiting).fetch_one(&pool).await?;
        if found.len() == citizens.len() && left == 0 {
            return Ok(found);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} of {} first halves sent, {left} messages still queued after 10 minutes",
            found.len(),
            citizens.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The first halves in notify-svc's local SMS sink, by message id, read once.
fn sms_halves(data_dir: &std::path::Path) -> anyhow::Result<HashMap<String, String>> {
    let lines = std::fs::read_to_string(data_dir.join("outbox/sms.jsonl"))
        .context("reading notify-svc's local SMS sink (is --data-dir the suite's?)")?;
    let mut halves = HashMap::new();
    for line in lines.lines() {
        let Ok(sms) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let (Some(id), Some(text)) = (sms["message_id"].as_str(), sms["text"].as_str()) else {
            continue;
        };
        let after = text.split_once(" è ").map(|(_, a)| a).unwrap_or_default();
        let half = after.split(|c: char| c == '.' || c.is_whitespace()).next().unwrap_or_default();
        halves.insert(id.to_owned(), half.to_owned());
    }
    Ok(halves)
}

/// Citizens `from..from + n`, each logged in with a simplified PIN: (fiscal code, token).
pub(crate) async fn population(
    args: &BenchArgs,
    from: u64,
) -> anyhow::Result<Vec<(String, String)>> {
    let n = args.claimants as u64;
    let user = args.backoffice_user.as_deref().context(
        "clickday needs --backoffice-user (the registries are loaded as the back office)",
    )?;
    let started = Instant::now();
    bench::register(args, from, n).await?;
    let channel = Endpoint::from_shared(args.gateway.clone())?.connect().await?;
    let backoffice = crate::import::login(channel.clone(), user).await?;
    let citizens: Vec<(u64, String)> =
        (from..from + n).map(|i| (i, bench::citizen(i).fiscal_code)).collect();
    import_registry(channel.clone(), &backoffice.access_token, &citizens).await?;

    let identity = IdentityServiceClient::new(channel);
    let forms: Vec<id::RequestPinRequest> = (from..from + n).map(bench::citizen).collect();
    in_parallel(forms, |form| {
        let mut identity = identity.clone();
        async move {
            identity.request_pin(form).await.context("PIN request")?;
            Ok(())
        }
    })
    .await?;
    let wanted: HashSet<String> = citizens.iter().map(|(_, cf)| cf.clone()).collect();
    let messages = first_halves_sent(args, &wanted).await?;
    let halves = sms_halves(&args.data_dir)?;
    let logins: Vec<(String, String)> = messages
        .into_iter()
        .filter_map(|(cf, message)| halves.get(&message).map(|h| (cf, h.clone())))
        .collect();
    anyhow::ensure!(logins.len() == citizens.len(), "some first halves are not in the SMS sink");
    let sessions = in_parallel(logins, |(cf, half)| {
        let mut identity = identity.clone();
        async move {
            let request = id::LoginWithPinRequest { fiscal_code: cf.clone(), pin: half };
            let reply = identity.login_with_pin(request).await.context("simplified-PIN login")?;
            let session = reply.into_inner().session.context("no session")?;
            Ok((cf, session.access_token))
        }
    })
    .await?;
    println!(
        "population: {n} citizens on both registries and logged in with a simplified PIN in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(sessions)
}

pub(crate) fn claim(cf: &str) -> cl::SubmitClaimRequest {
    cl::SubmitClaimRequest {
        benefit_code: "PROFESSIONISTI_COCOCO".into(),
        fiscal_code: String::new(),
        payment: Some(cl::Payment {
            method: Some(cl::payment::Method::BankTransfer(cl::BankTransfer {
                iban: "IT60X0542811101000000123456".into(),
                holder_fiscal_code: cf.into(),
            })),
        }),
        contacts: Some(cl::ClaimContacts {
            email: "cittadino@example.it".into(),
            mobile_phone: String::new(),
        }),
        declarations: Some(cl::Declarations { truthful: true, no_parental_leave_instead: false }),
        child_fiscal_code: String::new(),
        idempotency_key: format!("clickday-{cf}"),
    }
}

pub async fn run(args: &BenchArgs, from: u64) -> anyhow::Result<()> {
    let sessions = Arc::new(population(args, from).await?);
    file_claims(args, sessions).await.map(|_| ())
}

/// Every citizen of `sessions` files one claim through the gateway at once; prints the figures
/// and returns the accepted claims per second.
pub(crate) async fn file_claims(
    args: &BenchArgs,
    sessions: Arc<Vec<(String, String)>>,
) -> anyhow::Result<f64> {
    let channels = bench::channels(&args.gateway, args.connections).await?;
    let targets = cpu::discover(&[&args.gateway], &args.pids);
    let next = Arc::new(AtomicUsize::new(0));
    let refusals: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let before = cpu::snapshot(&targets);
    let start = Instant::now();
    let workers: Vec<_> = (0..args.concurrency.max(1))
        .map(|i| {
            let channel = channels[i % channels.len()].clone();
            let (sessions, next, refusals) = (sessions.clone(), next.clone(), refusals.clone());
            tokio::spawn(async move {
                let mut client = ClaimsServiceClient::new(channel);
                let (mut ok, mut errors, mut latencies) = (0u64, 0u64, Vec::new());
                while let Some((cf, token)) = sessions.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let Ok(request) = bearer(token, claim(cf)) else { continue };
                    let t0 = Instant::now();
                    match client.submit_claim(request).await {
                        Ok(_) => {
                            ok += 1;
                            latencies.push(t0.elapsed().as_micros() as u64);
                        }
                        Err(status) => {
                            use tonic_types::StatusExt;
                            let reason = status
                                .get_details_error_info()
                                .map(|i| i.reason)
                                .unwrap_or_else(|| format!("{:?}", status.code()));
                            if status.code() != tonic::Code::FailedPrecondition {
                                errors += 1;
                            }
                            let mut r = refusals.lock().unwrap_or_else(|e| e.into_inner());
                            *r.entry(reason).or_default() += 1;
                        }
                    }
                }
                (ok, errors, latencies)
            })
        })
        .collect();
    let mut f = Figures { ok: 0, errors: 0, elapsed: Duration::ZERO, latencies_us: Vec::new() };
    for w in workers {
        let (ok, errors, latencies) = w.await?;
        f.ok += ok;
        f.errors += errors;
        f.latencies_us.extend(latencies);
    }
    f.elapsed = start.elapsed();
    f.latencies_us.sort_unstable();
    println!(
        "clickday {:<26} {:>9} accepted in {:.2} s: {:.0} accepted/s, p50 {:.2} ms, p99 {:.2} ms",
        args.gateway,
        f.ok,
        f.elapsed.as_secs_f64(),
        f.rate(),
        f.percentile_ms(0.50),
        f.percentile_ms(0.99)
    );
    let refusals = refusals.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if refusals.is_empty() {
        println!("refused: none");
    }
    for (reason, count) in &refusals {
        println!("refused: {count} {reason}");
    }
    let calls = f.ok + refusals.values().sum::<u64>();
    cpu::report(&targets, &before, calls, f.elapsed);
    Ok(f.rate())
}
