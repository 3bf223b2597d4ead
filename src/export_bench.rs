//! `sportello bench export`: PrivacyService/ExportMyData through the gateway for one citizen with
//! 1,000 audit rows and 50 messages, one export after the other: the time of each (target
//! < 200 ms), its size, each process's CPU per export, and the resident memory of the processes
//! before and at their peak — then again with ten times the audit rows, where a streamed export
//! keeps the peak where it was.

use crate::bench::{BenchArgs, Prepared};
use crate::cpu;
use sportello_proto::identity::v1 as id;
use sportello_proto::identity::v1::identity_service_client::IdentityServiceClient;
use sportello_proto::notify::v1::notify_service_client::NotifyServiceClient;
use sportello_proto::notify::v1::{Channel as NotifyChannel, EnqueueMessageRequest};
use sportello_proto::privacy::v1::privacy_service_client::PrivacyServiceClient;
use sportello_proto::privacy::v1::ExportMyDataRequest;
use std::time::{Duration, Instant};
use tonic::transport::Endpoint;

/// Exports measured per phase (each export adds an audit row and its notices: a few, so that
/// the citizen stays the one described).
const EXPORTS: usize = 20;
const AUDIT_ROWS: usize = 1_000;
const MESSAGES: usize = 50;

/// A process's resident set and its peak so far, in KiB.
fn memory(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |field: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(field))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    Some((kib("VmRSS:")?, kib("VmHWM:")?))
}

/// identity-svc's database, beside notify-svc's (`--notify-database-url`), and its trail.
fn identity_trail(notify_url: &str) -> (String, &'static str) {
    if notify_url.starts_with("postgres") {
        (notify_url.to_owned(), "identity.audit_events")
    } else {
        (notify_url.replace("notify.sqlite", "identity.sqlite"), "audit_events")
    }
}

/// Appends `n` staff lookups of `cf` to identity-svc's trail, by three operators in turn.
async fn add_audit_rows(args: &BenchArgs, cf: &str, n: usize) -> anyhow::Result<()> {
    sqlx::any::install_default_drivers();
    let (url, table) = identity_trail(&args.notify_database_url);
    let pool = sqlx::AnyPool::connect(&url).await?;
    let mut tx = pool.begin().await?;
    let sql = format!(
        "INSERT INTO {table} (at, operator_id, action, fiscal_code, outcome, detail, actor_role) \
         VALUES ($1, $2, 'LookupCredential', $3, 'OK', 'bench', 'ACTOR_ROLE_OPERATOR')"
    );
    let now = sportello_platform::now_millis();
    for i in 0..n {
        let at = now - (n - i) as i64 * 1_000;
        let operator = format!("bench-operator-{}", i % 3);
        sqlx::query(&sql).bind(at).bind(operator).bind(cf).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Stores `n` messages to `cf` at notify-svc, as the other services would.
async fn add_messages(args: &BenchArgs, cf: &str, n: usize) -> anyhow::Result<()> {
    let direct = args.direct.clone().unwrap_or_else(|| "http://127.0.0.1:50054".into());
    let mut notify = NotifyServiceClient::new(Endpoint::from_shared(direct)?.connect().await?);
    let token = crate::bench::service_token(&args.data_dir)?;
    for i in 0..n {
        let mut request = tonic::Request::new(EnqueueMessageRequest {
            idempotency_key: format!("bench:export:{cf}:{i}"),
            fiscal_code: cf.to_owned(),
            channel: NotifyChannel::Email as i32,
            address: format!("export{i}@example.it"),
            template: "PIN_CHANGED".into(),
            ..Default::default()
        });
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse()?);
        notify.enqueue_message(request).await?;
    }
    Ok(())
}

/// One export, read to its end: (time, lines, bytes).
async fn export_once(
    privacy: &mut PrivacyServiceClient<tonic::transport::Channel>,
    token: &str,
) -> anyhow::Result<(Duration, usize, usize)> {
    let start = Instant::now();
    let mut request = tonic::Request::new(ExportMyDataRequest {});
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse()?);
    let mut stream = privacy.export_my_data(request).await?.into_inner();
    let (mut lines, mut bytes) = (0, 0);
    while let Some(chunk) = stream.message().await? {
        lines += chunk.data.iter().filter(|b| **b == b'\n').count();
        bytes += chunk.data.len();
    }
    Ok((start.elapsed(), lines, bytes))
}

/// [`EXPORTS`] exports one after the other, with their figures printed under `label`.
async fn phase(
    label: &str,
    privacy: &mut PrivacyServiceClient<tonic::transport::Channel>,
    token: &str,
    targets: &[cpu::Target],
) -> anyhow::Result<()> {
    let before_memory: Vec<_> = targets.iter().map(|t| memory(t.pid)).collect();
    let before = cpu::snapshot(targets);
    let start = Instant::now();
    let mut times = Vec::with_capacity(EXPORTS);
    let mut size = (0, 0);
    for _ in 0..EXPORTS {
        let (took, lines, bytes) = export_once(privacy, token).await?;
        times.push(took);
        size = (lines, bytes);
    }
    let elapsed = start.elapsed();
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{label}: {EXPORTS} exports of {} lines ({} KB): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms \
         ({:.1} exports/s)",
        size.0,
        size.1 / 1024,
        ms(times[EXPORTS / 2]),
        ms(times[(EXPORTS - 1) * 99 / 100]),
        ms(times[EXPORTS - 1]),
        EXPORTS as f64 / elapsed.as_secs_f64()
    );
    cpu::report(targets, &before, EXPORTS as u64, elapsed);
    for (t, before) in targets.iter().zip(before_memory) {
        let (Some((rss, _)), Some((_, peak))) = (before, memory(t.pid)) else { continue };
        println!(
            "         mem {:<22} RSS before {:>7} KiB, peak since start {:>7} KiB",
            format!("{}[{}]", t.name, t.pid),
            rss,
            peak
        );
    }
    Ok(())
}

pub async fn run(args: &BenchArgs, prepared: &Prepared) -> anyhow::Result<()> {
    let (cf, pin) = prepared.first().ok_or_else(|| anyhow::anyhow!("no citizen prepared"))?;
    let gateway = Endpoint::from_shared(args.gateway.clone())?.connect().await?;
    let login = IdentityServiceClient::new(gateway.clone())
        .login_with_pin(id::LoginWithPinRequest { fiscal_code: cf.clone(), pin: pin.clone() })
        .await?
        .into_inner();
    let token = login.session.map(|s| s.access_token).unwrap_or_default();
    add_audit_rows(args, cf, AUDIT_ROWS).await?;
    add_messages(args, cf, MESSAGES).await?;
    let mut privacy = PrivacyServiceClient::new(gateway);
    // Unmeasured: connections, caches and statements warm.
    export_once(&mut privacy, &token).await?;
    let targets = cpu::discover(&[&args.gateway], &args.pids);
    phase(&format!("{AUDIT_ROWS} audit rows, {MESSAGES} messages"), &mut privacy, &token, &targets)
        .await?;
    add_audit_rows(args, cf, AUDIT_ROWS * 9).await?;
    export_once(&mut privacy, &token).await?;
    phase(&format!("{} audit rows (10x)", AUDIT_ROWS * 10), &mut privacy, &token, &targets).await?;
    Ok(())
}
