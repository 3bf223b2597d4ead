//! `sportello import residents FILE`: loads the register of residents from a CSV file (layout in
//! `identity_svc::residents::csv`) through the gateway, as a back-office user: logs in with
//! LoginStaff, streams the rows in batches to `ResidentsService/ImportResidents` behind a
//! progress bar, and prints what was written and every bad row by line and column.
//!
//! `sportello import registry FILE`: loads the insured-positions registry (layout in
//! `claims_svc::domain::registry`) the same way, streaming the file itself to
//! `ClaimsBackOfficeService/ImportRegistry`, which parses it.

use crate::gateway_addr::Gateway;
use crate::stdout::outln;
use anyhow::Context as _;
use futures::StreamExt as _;
use identity_svc::domain::residents::Resident;
use identity_svc::residents::{csv, MAX_BATCH};
use indicatif::{ProgressBar, ProgressStyle};
use sportello_proto::identity::v1 as wire;
use sportello_proto::identity::v1::identity_service_client::IdentityServiceClient;
use sportello_proto::identity::v1::residents_service_client::ResidentsServiceClient;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc::Receiver;

/// Batches per ImportResidents call: 20,000 rows, a few seconds of work.
const CALL_BATCHES: usize = 20;

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, clap::Subcommand)]
enum What {
    /// The register of residents: a CSV file with a header row (fiscal_code, surname,
    /// given_name, birth_date, sex, birth_province, birth_municipality, birth_country, street,
    /// street_number, postal_code, province, municipality, country, address).
    Residents(ResidentsArgs),
    /// The insured-positions registry claims are decided on: a CSV file with a header row
    /// (fiscal_code, schemes, vat_from, vat_to, cococo_from, cococo_to, pensioner, seasonal_end,
    /// seasonal_involuntary, agricultural_days_2019, entertainment_contributions_2019,
    /// entertainment_income_2019, employed_17_03_2020, reddito_di_cittadinanza,
    /// health_or_security_worker, children).
    Registry(ResidentsArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct ResidentsArgs {
    /// The CSV file.
    pub(crate) file: PathBuf,
    /// The gateway, as host:port or http://host:port.
    #[arg(long, env = "SPORTELLO_GATEWAY", default_value_t = Gateway::local())]
    pub(crate) gateway: Gateway,
    /// A back-office username; the password is read from $SPORTELLO_PASSWORD, else from the
    /// first line of standard input.
    #[arg(long, env = "SPORTELLO_USERNAME")]
    pub(crate) username: String,
    /// Registry: data rows per ImportRegistry call (each call well within the gateway's
    /// deadline cap).
    #[arg(long, default_value_t = 200_000, hide = true)]
    pub(crate) rows_per_call: usize,
}

pub fn run(args: ImportArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match args.what {
        What::Residents(args) => runtime.block_on(residents(args)),
        What::Registry(args) => runtime.block_on(crate::import_registry::registry(args)),
    }
}

fn password() -> anyhow::Result<String> {
    if let Ok(p) = std::env::var("SPORTELLO_PASSWORD") {
        return Ok(p);
    }
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// A back-office session for `username`, the password from $SPORTELLO_PASSWORD or stdin.
pub async fn login(
    channel: tonic::transport::Channel,
    username: &str,
) -> anyhow::Result<wire::Session> {
    let login = wire::LoginStaffRequest { username: username.to_owned(), password: password()? };
    IdentityServiceClient::new(channel)
        .login_staff(login)
        .await
        .context("back-office login")?
        .into_inner()
        .session
        .context("no session")
}

/// Sends `records` to ImportResidents in calls of [`CALL_BATCHES`] batches.
pub async fn import_all(
    channel: tonic::transport::Channel,
    token: &str,
    records: &[wire::ResidentRecord],
) -> anyhow::Result<()> {
    for call in records.chunks(CALL_BATCHES * MAX_BATCH) {
        let batches: Vec<wire::ImportResidentsRequest> = call
            .chunks(MAX_BATCH)
            .map(|c| wire::ImportResidentsRequest { residents: c.to_vec() })
            .collect();
        let mut request = tonic::Request::new(futures::stream::iter(batches));
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse()?);
        ResidentsServiceClient::new(channel.clone()).import_residents(request).await?;
    }
    Ok(())
}

/// A problem to print: where, which column, what.
pub(crate) struct Problem {
    pub(crate) line: i64,
    pub(crate) column: String,
    pub(crate) description: String,
}

/// Prints `problems` by line, and how many more the server found than it listed.
pub(crate) fn print_problems(mut problems: Vec<Problem>, not_listed: i64) {
    problems.sort_by_key(|p| p.line);
    for p in &problems {
        if p.column.is_empty() {
            outln!("line {}: {}", p.line, p.description);
        } else {
            outln!("line {}, {}: {}", p.line, p.column, p.description);
        }
    }
    if not_listed > 0 {
        outln!("… and {not_listed} more problems not listed");
    }
}

/// The start of an import: the gateway, a back-office session, and a progress bar over the
/// file's data rows.
pub(crate) async fn start(
    args: &ResidentsArgs,
) -> anyhow::Result<(tonic::transport::Channel, wire::Session, ProgressBar)> {
    let rows = count_rows(&args.file)?;
    let channel = tonic::transport::Endpoint::from_shared(args.gateway.url().to_owned())?
        .connect()
        .await
        .with_context(|| format!("connecting to {}", args.gateway))?;
    let session = login(channel.clone(), &args.username).await?;
    let bar = ProgressBar::new(rows);
    bar.set_style(ProgressStyle::with_template("{bar:40} {pos}/{len} rows  {per_sec}  eta {eta}")?);
    Ok((channel, session, bar))
}

async fn residents(args: ResidentsArgs) -> anyhow::Result<()> {
    let (channel, session, bar) = start(&args).await?;
    let rows = bar.length().unwrap_or_default();
    // A reader thread parses the file into batches; the stream hands them to gRPC as the
    // server takes them (HTTP/2 flow control paces the reader), moving the bar.
    let (tx, rx) = tokio::sync::mpsc::channel::<wire::ImportResidentsRequest>(4);
    let file = std::fs::File::open(&args.file)
        .with_context(|| format!("opening {}", args.file.display()))?;
    let reader = tokio::task::spawn_blocking(move || {
        let mut local = Vec::new();
        let mut batch = Vec::with_capacity(MAX_BATCH);
        // The whole file's fiscal codes: the file goes over several calls, and a code named
        // again in a later one must not overwrite the first (the README's promise).
        let mut seen: HashMap<String, i64> = HashMap::new();
        let mut duplicates = Vec::new();
        let today = chrono::Utc::now().date_naive();
        for row in csv::rows(std::io::BufReader::new(file)) {
            match row {
                // As the server decides: only an entry it would load takes its code.
                Ok(record) => match Resident::parse(&record, today) {
                    Ok(resident) => match seen.get(&resident.fiscal_code) {
                        Some(first) => duplicates.push(Problem {
                            line: record.line,
                            column: "fiscal_code".into(),
                            description: format!("the same fiscal code is already on line {first}"),
                        }),
                        None => {
                            seen.insert(resident.fiscal_code, record.line);
                            batch.push(record);
                        }
                    },
                    // The server says what is wrong with it.
                    Err(_) => batch.push(record),
                },
                Err(p) => local.push(p),
            }
            if batch.len() == MAX_BATCH {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(MAX_BATCH));
                if tx.blocking_send(wire::ImportResidentsRequest { residents: full }).is_err() {
                    return (local, duplicates);
                }
            }
        }
        if !batch.is_empty() {
            let _ = tx.blocking_send(wire::ImportResidentsRequest { residents: batch });
        }
        (local, duplicates)
    });
    let started = Instant::now();
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let mut reply = wire::ImportResidentsResponse::default();
    let client = ResidentsServiceClient::new(channel);
    let refused = loop {
        let Some(first) = rx.lock().await.recv().await else { break None };
        match import_call(client.clone(), &session.access_token, first, rx.clone(), &bar).await {
            Ok(part) => {
                reply.received += part.received;
                reply.written += part.written;
                reply.unchanged += part.unchanged;
                reply.rejected += part.rejected;
                reply.rejections.extend(part.rejections);
                reply.rejections_not_listed += part.rejections_not_listed;
            }
            Err(status) => break Some(status),
        }
    };
    // Dropping the receiver stops the reader after a refusal.
    drop(rx);
    let (local, duplicates) = reader.await?;
    bar.finish_and_clear();
    let took = started.elapsed();

    let (unreadable, rejected_here) = (local.len(), duplicates.len() as i64);
    let problems: Vec<Problem> = local
        .into_iter()
        .map(|p| Problem { line: p.line, column: p.column, description: p.description })
        .chain(duplicates)
        .chain(reply.rejections.iter().map(|r| Problem {
            line: r.line,
            column: csv::column_of(&r.field).to_owned(),
            description: r.description.clone(),
        }))
        .collect();
    print_problems(problems, reply.rejections_not_listed);
    let rate = reply.received as f64 / took.as_secs_f64().max(1e-3);
    outln!(
        "{} rows read, {} sent: {} written, {} unchanged, {} rejected, {} unreadable ({:.1} s, {:.0} rows/s)",
        rows,
        reply.received,
        reply.written,
        reply.unchanged,
        reply.rejected + rejected_here,
        unreadable,
        took.as_secs_f64(),
        rate
    );
    outcome(refused, reply.rejected + rejected_here, unreadable as i64)
}

/// How an import ends: refused, or some rows not taken (status 1, said on stderr, so a script
/// can tell), or every row taken (status 0).
pub(crate) fn outcome(
    refused: Option<tonic::Status>,
    rejected: i64,
    unreadable: i64,
) -> anyhow::Result<()> {
    if let Some(s) = refused {
        anyhow::bail!(
            "import refused: {:?} {} (the rows above were written before it)",
            s.code(),
            s.message()
        );
    }
    anyhow::ensure!(
        rejected == 0 && unreadable == 0,
        "not every row was taken: {rejected} rejected, {unreadable} unreadable (listed above)"
    );
    Ok(())
}

/// One ImportResidents call: `first` and up to [`CALL_BATCHES`] − 1 more batches from `rx`.
/// Calls are kept short (the gateway caps deadlines at 30 s by default); the register's import
/// is idempotent, so splitting a file over several calls changes nothing.
async fn import_call(
    mut client: ResidentsServiceClient<tonic::transport::Channel>,
    token: &str,
    first: wire::ImportResidentsRequest,
    rx: Arc<tokio::sync::Mutex<Receiver<wire::ImportResidentsRequest>>>,
    bar: &ProgressBar,
) -> Result<wire::ImportResidentsResponse, tonic::Status> {
    bar.inc(first.residents.len() as u64);
    let progress = bar.clone();
    let rest = futures::stream::unfold((rx, 1), move |(rx, sent)| {
        let progress = progress.clone();
        async move {
            if sent == CALL_BATCHES {
                return None;
            }
            let batch = rx.lock().await.recv().await?;
            progress.inc(batch.residents.len() as u64);
            Some((batch, (rx, sent + 1)))
        }
    });
    let stream = futures::stream::once(async { first }).chain(rest);
    let mut request = tonic::Request::new(stream);
    let bearer =
        format!("Bearer {token}").parse().map_err(|_| tonic::Status::invalid_argument("token"))?;
    request.metadata_mut().insert("authorization", bearer);
    Ok(client.import_residents(request).await?.into_inner())
}

/// Data rows in the file (lines less the header), for the progress bar.
fn count_rows(path: &std::path::Path) -> anyhow::Result<u64> {
    use std::io::BufRead;
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let lines = std::io::BufReader::new(file).lines().count() as u64;
    Ok(lines.saturating_sub(1))
}
