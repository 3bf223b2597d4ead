//! `sportello import registry FILE`: streams the file's bytes to ImportRegistry, which parses
//! and checks every row. A large file goes over several calls (each well within the gateway's
//! deadline cap), cut between rows as CSV reads them (a quoted cell may hold a newline), each
//! call starting with the file's header; the server's line numbers are shifted back to the
//! file's. The CLI keeps the fiscal codes of the whole file: a code named again, in whichever
//! call, is rejected here (its line sent blank, so that the server's line numbers stay the
//! file's) and never overwrites the first.

use crate::import::{print_problems, Problem, ResidentsArgs};
use crate::stdout::outln;
use anyhow::Context as _;
use claims_svc::domain::csv_stream::{CsvStream, Item};
use sportello_domain::CodiceFiscale;
use sportello_proto::claims::v1 as wire;
use sportello_proto::claims::v1::claims_back_office_service_client::ClaimsBackOfficeServiceClient;
use std::collections::HashMap;
use std::io::Read;
use std::time::Instant;

/// Bytes per message of a call's stream.
const CHUNK: usize = 256 * 1024;

/// One call's worth of the file: the header and the data lines, and how far the server's line
/// numbers are from the file's.
struct Part {
    text: Vec<u8>,
    shift: i64,
    rows: u64,
}

/// What the CLI itself rejected: a fiscal code named again.
type Duplicates = Vec<Problem>;

/// Cuts `file` into parts of `per_call` data rows, sending each to `tx`.
fn cut(
    mut file: impl Read,
    per_call: usize,
    tx: &tokio::sync::mpsc::Sender<Part>,
) -> anyhow::Result<Duplicates> {
    let today = chrono::Utc::now().date_naive();
    let mut csv = CsvStream::new();
    let (mut items, mut chunk) = (Vec::new(), vec![0; CHUNK]);
    // The bytes not yet in a part, from file offset `pending_from` on.
    let (mut pending, mut pending_from) = (Vec::new(), 0_u64);
    let mut header: Option<(Vec<u8>, i64, Option<usize>)> = None;
    let mut part: Option<Part> = None;
    let mut seen: HashMap<String, i64> = HashMap::new();
    let mut duplicates = Vec::new();
    let send = |part: Part| tx.blocking_send(part).map_err(|_| anyhow::anyhow!("import stopped"));
    loop {
        let n = file.read(&mut chunk)?;
        pending.extend_from_slice(&chunk[..n]);
        if n == 0 {
            csv.finish(&mut items);
        } else {
            csv.feed(&chunk[..n], &mut items);
        }
        for item in items.drain(..) {
            let (line, lines, end, cells) = match item {
                Item::Row { line, lines, bytes, cells } => (line, lines, bytes.end, cells.ok()),
                // The rest of the file, sent as it is: the server reports its lines.
                Item::UnclosedQuote { line, lines } => {
                    (line, lines, pending_from + pending.len() as u64, None)
                }
            };
            let upto = (end - pending_from) as usize;
            let raw: Vec<u8> = pending.drain(..upto).collect();
            pending_from = end;
            let Some((head, head_lines, column)) = &header else {
                let column = cells.as_ref().and_then(|c| {
                    c.iter().position(|n| {
                        n.trim().trim_start_matches('\u{feff}').eq_ignore_ascii_case("fiscal_code")
                    })
                });
                header = Some((raw, line + lines - 1, column));
                continue;
            };
            let part = part.get_or_insert_with(|| Part {
                text: head.clone(),
                // The part's first byte after the header is the file's line `line` less the
                // blank lines before it (one byte each).
                shift: line
                    - (raw.iter().take_while(|b| **b == b'\n').count() as i64)
                    - (head_lines + 1),
                rows: 0,
            });
            let code = cells
                .as_ref()
                .zip(*column)
                .and_then(|(c, i)| c.get(i))
                .and_then(|text| CodiceFiscale::parse(text, today).ok())
                .map(|cf| cf.canonical());
            match code.map(|cf| (seen.get(&cf).copied(), cf)) {
                Some((Some(first), _)) => {
                    duplicates.push(Problem {
                        line,
                        column: "fiscal_code".into(),
                        description: format!("the same fiscal code is already on line {first}"),
                    });
                    // Sent blank: the server's line numbers stay the file's.
                    part.text.extend(raw.iter().filter(|b| **b == b'\n'));
                }
                other => {
                    if let Some((None, cf)) = other {
                        seen.insert(cf, line);
                    }
                    part.text.extend_from_slice(&raw);
                }
            }
            part.rows += 1;
        }
        if part.as_ref().is_some_and(|p| p.rows as usize >= per_call) || n == 0 {
            if let Some(full) = part.take().filter(|p| p.rows > 0) {
                send(full)?;
            }
        }
        if n == 0 {
            return Ok(duplicates);
        }
    }
}

pub async fn registry(args: ResidentsArgs) -> anyhow::Result<()> {
    let (channel, session, bar) = crate::import::start(&args).await?;

    // A reader thread cuts the file into parts; each part is one call.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Part>(2);
    let file = std::fs::File::open(&args.file)
        .with_context(|| format!("opening {}", args.file.display()))?;
    // 200,000 rows (the default) take a few seconds at the rates the import reaches.
    let per_call = args.rows_per_call.max(1);
    let reader = tokio::task::spawn_blocking(move || cut(file, per_call, &tx));

    let started = Instant::now();
    let mut total = wire::ImportRegistryResponse::default();
    let mut client = ClaimsBackOfficeServiceClient::new(channel);
    let mut refused = None;
    while let Some(part) = rx.recv().await {
        let chunks: Vec<wire::ImportRegistryRequest> = part
            .text
            .chunks(CHUNK)
            .map(|c| wire::ImportRegistryRequest { chunk: c.to_vec() })
            .collect();
        let mut request = tonic::Request::new(futures::stream::iter(chunks));
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {}", session.access_token).parse()?);
        let reply = match client.import_registry(request).await {
            Ok(reply) => reply.into_inner(),
            Err(status) => {
                refused = Some(status);
                break;
            }
        };
        total.rows_read += reply.rows_read;
        total.rows_changed += reply.rows_changed;
        total.rows_unchanged += reply.rows_unchanged;
        total.rows_rejected += reply.rows_rejected;
        total.lines_unreadable += reply.lines_unreadable;
        total.errors_not_listed += reply.errors_not_listed;
        total.errors.extend(reply.errors.into_iter().map(|mut e| {
            e.line += part.shift;
            e
        }));
        bar.inc(part.rows);
    }
    // Dropping the receiver stops the reader after a refusal.
    drop(rx);
    let duplicates = match reader.await? {
        Ok(found) => found,
        Err(_) if refused.is_some() => Vec::new(),
        Err(e) => return Err(e),
    };
    bar.finish_and_clear();
    let took = started.elapsed();
    let rejected_here = duplicates.len() as i64;
    let problems = duplicates.into_iter().chain(total.errors.iter().map(|e| Problem {
        line: e.line,
        column: e.column.clone(),
        description: e.description.clone(),
    }));
    print_problems(problems.collect(), total.errors_not_listed);
    outln!(
        "{} rows read: {} changed, {} unchanged, {} rejected, {} lines unreadable ({:.1} s, {:.0} rows/s)",
        total.rows_read + rejected_here,
        total.rows_changed,
        total.rows_unchanged,
        total.rows_rejected + rejected_here,
        total.lines_unreadable,
        took.as_secs_f64(),
        total.rows_read as f64 / took.as_secs_f64().max(1e-3)
    );
    crate::import::outcome(refused, total.rows_rejected + rejected_here, total.lines_unreadable)
}
