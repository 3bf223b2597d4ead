//! `sportello import registry FILE`: streams the file's bytes to ImportRegistry, which parses
//! and checks every row. A large file goes over several calls (each well within the gateway's
//! deadline cap), split at line boundaries, each call starting with the file's header; the
//! server's line numbers are shifted back to the file's.

use crate::import::ResidentsArgs;
use anyhow::Context as _;
use sportello_proto::claims::v1 as wire;
use sportello_proto::claims::v1::claims_back_office_service_client::ClaimsBackOfficeServiceClient;
use std::io::BufRead;
use std::time::Instant;

/// Bytes per message of a call's stream.
const CHUNK: usize = 256 * 1024;

/// One call's worth of the file: the header and the data lines, and the line of the file the
/// first of them is.
struct Part {
    text: Vec<u8>,
    first_line: i64,
    rows: u64,
}

pub async fn registry(args: ResidentsArgs) -> anyhow::Result<()> {
    let (channel, session, bar) = crate::import::start(&args).await?;

    // A reader thread cuts the file into parts; each part is one call.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Part>(2);
    let file = std::fs::File::open(&args.file)
        .with_context(|| format!("opening {}", args.file.display()))?;
    // 200,000 rows (the default) take a few seconds at the rates the import reaches.
    let per_call = args.rows_per_call.max(1);
    let reader = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let mut lines = std::io::BufReader::new(file).split(b'\n');
        let Some(header) = lines.next().transpose()? else { return Ok(()) };
        let mut line_no = 1_i64;
        loop {
            let mut part = Part { text: header.clone(), first_line: line_no + 1, rows: 0 };
            part.text.push(b'\n');
            for line in lines.by_ref() {
                let line = line?;
                line_no += 1;
                part.text.extend_from_slice(&line);
                part.text.push(b'\n');
                part.rows += 1;
                if part.rows as usize == per_call {
                    break;
                }
            }
            if part.rows == 0 || tx.blocking_send(part).is_err() {
                return Ok(());
            }
        }
    });

    let started = Instant::now();
    let mut total = wire::ImportRegistryResponse::default();
    let mut client = ClaimsBackOfficeServiceClient::new(channel);
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
        let reply = client.import_registry(request).await;
        let reply =
            reply.map_err(|s| anyhow::anyhow!("import refused: {:?} {}", s.code(), s.message()))?;
        let reply = reply.into_inner();
        // The server numbers the part's lines from 1, its header being line 1.
        let shift = part.first_line - 2;
        total.rows_read += reply.rows_read;
        total.rows_changed += reply.rows_changed;
        total.rows_unchanged += reply.rows_unchanged;
        total.rows_rejected += reply.rows_rejected;
        total.errors.extend(reply.errors.into_iter().map(|mut e| {
            e.line += shift;
            e
        }));
        bar.inc(part.rows);
    }
    reader.await??;
    bar.finish_and_clear();
    let took = started.elapsed();
    for e in &total.errors {
        if e.column.is_empty() {
            println!("line {}: {}", e.line, e.description);
        } else {
            println!("line {}, {}: {}", e.line, e.column, e.description);
        }
    }
    println!(
        "{} rows read: {} changed, {} unchanged, {} rejected ({:.1} s, {:.0} rows/s)",
        total.rows_read,
        total.rows_changed,
        total.rows_unchanged,
        total.rows_rejected,
        took.as_secs_f64(),
        total.rows_read as f64 / took.as_secs_f64().max(1e-3)
    );
    Ok(())
}
