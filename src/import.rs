//! `sportello import residents FILE`: loads the register of residents from a CSV file (layout in
//! `identity_svc::residents::csv`) through the gateway, as a back-office user: logs in with
//! LoginStaff, streams the rows in batches to `ResidentsService/ImportResidents` behind a
//! progress bar, and prints what was written and every bad row by line and column.

use anyhow::Context as _;
use identity_svc::residents::{csv, MAX_BATCH};
use indicatif::{ProgressBar, ProgressStyle};
use sportello_proto::identity::v1 as wire;
use sportello_proto::identity::v1::identity_service_client::IdentityServiceClient;
use sportello_proto::identity::v1::residents_service_client::ResidentsServiceClient;
use std::path::PathBuf;
use std::time::Instant;

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
}

#[derive(Debug, clap::Args)]
struct ResidentsArgs {
    /// The CSV file.
    file: PathBuf,
    /// The gateway.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    gateway: String,
    /// A back-office username; the password is read from $SPORTELLO_PASSWORD, else from the
    /// first line of standard input.
    #[arg(long, env = "SPORTELLO_USERNAME")]
    username: String,
}

pub fn run(args: ImportArgs) -> anyhow::Result<()> {
    let What::Residents(args) = args.what;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(residents(args))
}

fn password() -> anyhow::Result<String> {
    if let Ok(p) = std::env::var("SPORTELLO_PASSWORD") {
        return Ok(p);
    }
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// A problem to print: where, which column, what.
struct Problem {
    line: i64,
    column: String,
    description: String,
}

async fn residents(args: ResidentsArgs) -> anyhow::Result<()> {
    let rows = count_rows(&args.file)?;
    let channel = tonic::transport::Endpoint::from_shared(args.gateway.clone())?
        .connect()
        .await
        .with_context(|| format!("connecting to {}", args.gateway))?;
    let login = wire::LoginStaffRequest { username: args.username.clone(), password: password()? };
    let session = IdentityServiceClient::new(channel.clone())
        .login_staff(login)
        .await
        .context("back-office login")?
        .into_inner()
        .session
        .context("no session")?;

    let bar = ProgressBar::new(rows);
    bar.set_style(ProgressStyle::with_template("{bar:40} {pos}/{len} rows  {per_sec}  eta {eta}")?);
    // A reader thread parses the file into batches; the stream hands them to gRPC as the
    // server takes them (HTTP/2 flow control paces the reader), moving the bar.
    let (tx, rx) = tokio::sync::mpsc::channel::<wire::ImportResidentsRequest>(4);
    let file = std::fs::File::open(&args.file)
        .with_context(|| format!("opening {}", args.file.display()))?;
    let reader = tokio::task::spawn_blocking(move || {
        let mut local = Vec::new();
        let mut batch = Vec::with_capacity(MAX_BATCH);
        for row in csv::rows(std::io::BufReader::new(file)) {
            match row {
                Ok(record) => batch.push(record),
                Err(p) => local.push(p),
            }
            if batch.len() == MAX_BATCH {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(MAX_BATCH));
                if tx.blocking_send(wire::ImportResidentsRequest { residents: full }).is_err() {
                    return local;
                }
            }
        }
        if !batch.is_empty() {
            let _ = tx.blocking_send(wire::ImportResidentsRequest { residents: batch });
        }
        local
    });
    let progress = bar.clone();
    let stream = futures::stream::unfold(rx, move |mut rx| {
        let progress = progress.clone();
        async move {
            let batch = rx.recv().await?;
            progress.inc(batch.residents.len() as u64);
            Some((batch, rx))
        }
    });
    let mut request = tonic::Request::new(stream);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", session.access_token).parse().context("token")?,
    );
    // Bulk loads outlast the gateway's default deadline; ask for the most it allows.
    request.set_timeout(std::time::Duration::from_secs(3600));
    let started = Instant::now();
    let reply = ResidentsServiceClient::new(channel).import_residents(request).await;
    let local = reader.await?;
    bar.finish_and_clear();
    let reply = reply.context("import refused")?.into_inner();
    let took = started.elapsed();

    let unreadable = local.len();
    let mut problems: Vec<Problem> = local
        .into_iter()
        .map(|p| Problem { line: p.line, column: p.column, description: p.description })
        .chain(reply.rejections.iter().map(|r| Problem {
            line: r.line,
            column: csv::column_of(&r.field).to_owned(),
            description: r.description.clone(),
        }))
        .collect();
    problems.sort_by_key(|p| p.line);
    for p in &problems {
        if p.column.is_empty() {
            println!("line {}: {}", p.line, p.description);
        } else {
            println!("line {}, {}: {}", p.line, p.column, p.description);
        }
    }
    let rate = reply.received as f64 / took.as_secs_f64().max(1e-3);
    println!(
        "{} rows read, {} sent: {} written, {} unchanged, {} rejected, {} unreadable ({:.1} s, {:.0} rows/s)",
        rows,
        reply.received,
        reply.written,
        reply.unchanged,
        reply.rejected,
        unreadable,
        took.as_secs_f64(),
        rate
    );
    Ok(())
}

/// Data rows in the file (lines less the header), for the progress bar.
fn count_rows(path: &std::path::Path) -> anyhow::Result<u64> {
    use std::io::BufRead;
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let lines = std::io::BufReader::new(file).lines().count() as u64;
    Ok(lines.saturating_sub(1))
}
