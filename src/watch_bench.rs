//! `sportello bench watch`: live status at click-day scale. A population of citizens is
//! prepared as for `clickday` (each on both registries, each logged in for real); the first
//! `--streams / 4` of them each open four `WatchMyClaims` streams through the gateway (the most
//! a citizen may hold) and keep them open. The bench prints the memory each stream costs the
//! gateway and claims-svc (their RSS before and after, divided by the streams), then has the
//! watched citizens file a claim and waits until every stream saw it in review; then the other
//! citizens file theirs at once, as on click day, while the back office approves the watched
//! claims one after another, and the bench prints how long each approval took to reach the
//! streams watching it (from the start of the DecideClaim call).

use crate::bench::{BenchArgs, Figures};
use crate::clickday::{bearer, claim, file_claims, population};
use crate::cpu;
use crate::upload_bench::rss;
use anyhow::Context as _;
use futures::StreamExt as _;
use sportello_proto::claims::v1 as cl;
use sportello_proto::claims::v1::claims_back_office_service_client::ClaimsBackOfficeServiceClient;
use sportello_proto::claims::v1::claims_service_client::ClaimsServiceClient;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The streams one citizen may hold (the gateway's default bound).
const PER_CITIZEN: usize = 4;
/// Streams opened, claims filed by the watched citizens, at once.
const OPENING: usize = 64;

/// When each stream saw each (claim, status): one instant per stream that saw it.
type Seen = Arc<Mutex<HashMap<(String, i32), Vec<Instant>>>>;

/// Reads one stream until it ends, noting when each claim's status arrived.
async fn follow(
    mut stream: tonic::Streaming<cl::WatchMyClaimsResponse>,
    seen: Seen,
    initial: Arc<AtomicUsize>,
) {
    while let Ok(Some(message)) = stream.message().await {
        let now = Instant::now();
        if message.initial {
            initial.fetch_add(1, Ordering::Relaxed);
        }
        let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
        for claim in message.claims.into_iter().filter_map(|w| w.claim) {
            let id = claim.receipt.map(|r| r.claim_id).unwrap_or_default();
            seen.entry((id, claim.status)).or_default().push(now);
        }
    }
}

/// How many of `ids` every one of their streams saw in `status`.
fn all_seen(seen: &Seen, ids: &[String], status: cl::ClaimStatus) -> usize {
    let seen = seen.lock().unwrap_or_else(|p| p.into_inner());
    ids.iter()
        .filter(|id| {
            seen.get(&((*id).clone(), status as i32)).is_some_and(|t| t.len() >= PER_CITIZEN)
        })
        .count()
}

async fn wait_until(
    what: &str,
    within: Duration,
    mut done: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    while !done() {
        anyhow::ensure!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

pub async fn run(args: &BenchArgs, from: u64) -> anyhow::Result<()> {
    let citizens = args.streams.div_ceil(PER_CITIZEN);
    anyhow::ensure!(
        args.claimants > citizens,
        "--claimants ({}) must be more than the {citizens} citizens who hold --streams",
        args.claimants
    );
    let user = args.backoffice_user.clone().context("watch needs --backoffice-user")?;
    let sessions = population(args, from).await?;
    let (watchers, filers) = sessions.split_at(citizens);
    let channels = crate::bench::channels(&args.gateway, args.connections).await?;
    let targets = cpu::discover(&[&args.gateway], &args.pids);
    let pid = |name: &str| targets.iter().find(|t| t.name == name).map(|t| t.pid);
    let (gateway, claims) = (pid("gateway"), pid("claims"));
    let memory = || [gateway, claims].map(|p| p.and_then(rss).unwrap_or(0));

    // The streams, held open.
    let before = memory();
    let seen: Seen = Arc::default();
    let initial = Arc::new(AtomicUsize::new(0));
    let opens = watchers.iter().flat_map(|w| std::iter::repeat_n(w, PER_CITIZEN)).enumerate();
    let opened: Vec<anyhow::Result<()>> = futures::stream::iter(opens.map(|(i, (_, token))| {
        let channel = channels[i % channels.len()].clone();
        let (seen, initial) = (seen.clone(), initial.clone());
        async move {
            let request = bearer(token, cl::WatchMyClaimsRequest {})?;
            let stream = ClaimsServiceClient::new(channel).watch_my_claims(request).await?;
            tokio::spawn(follow(stream.into_inner(), seen, initial));
            Ok(())
        }
    }))
    .buffer_unordered(OPENING)
    .collect()
    .await;
    opened.into_iter().collect::<anyhow::Result<Vec<()>>>().context("opening the streams")?;
    let streams = citizens * PER_CITIZEN;
    wait_until("every stream's first message", Duration::from_secs(120), || {
        initial.load(Ordering::Relaxed) >= streams
    })
    .await?;
    // Whatever the first messages left behind is freed, or not, by now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = memory();
    let per = |i: usize| after[i].saturating_sub(before[i]) as f64 / streams as f64 / 1024.0;
    println!(
        "watch: {streams} WatchMyClaims streams held through the gateway by {citizens} citizens"
    );
    println!(
        "memory per stream: gateway {:.1} KB, claims-svc {:.1} KB, together {:.1} KB (RSS {} → {} MB, {} → {} MB)",
        per(0),
        per(1),
        per(0) + per(1),
        before[0] >> 20,
        after[0] >> 20,
        before[1] >> 20,
        after[1] >> 20,
    );

    // The watched citizens' claims, into the back office's queue.
    let filed: Vec<anyhow::Result<String>> =
        futures::stream::iter(watchers.iter().enumerate().map(|(i, (cf, token))| {
            let channel = channels[i % channels.len()].clone();
            async move {
                let request = bearer(token, claim(cf))?;
                let reply = ClaimsServiceClient::new(channel).submit_claim(request).await?;
                Ok(reply.into_inner().receipt.context("receipt")?.claim_id)
            }
        }))
        .buffer_unordered(OPENING)
        .collect()
        .await;
    // One in ten citizens is a pensioner, refused: only the others' claims are watched moving.
    let ids: Vec<String> = filed.into_iter().filter_map(Result::ok).collect();
    wait_until("every watched claim seen in review", Duration::from_secs(300), || {
        all_seen(&seen, &ids, cl::ClaimStatus::InReview) == ids.len()
    })
    .await?;

    // Click day beside the back office's approvals.
    let backoffice = crate::import::login(channels[0].clone(), &user).await?;
    let done = Arc::new(AtomicBool::new(false));
    let approvals = async {
        let mut bo = ClaimsBackOfficeServiceClient::new(channels[0].clone());
        let mut decided = Vec::new();
        for id in &ids {
            if done.load(Ordering::Relaxed) {
                break;
            }
            let approve = cl::DecideClaimRequest {
                claim_id: id.clone(),
                decision: cl::Decision::Approve as i32,
                ..Default::default()
            };
            let started = Instant::now();
            if bo.decide_claim(bearer(&backoffice.access_token, approve)?).await.is_ok() {
                decided.push((id.clone(), started));
            }
        }
        anyhow::Ok(decided)
    };
    let click_day = async {
        let rate = file_claims(args, Arc::new(filers.to_vec())).await;
        done.store(true, Ordering::Relaxed);
        rate
    };
    let (rate, decided) = tokio::join!(click_day, approvals);
    let (rate, decided) = (rate?, decided?);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut f = Figures { ok: 0, errors: 0, elapsed: Duration::ZERO, latencies_us: Vec::new() };
    {
        let seen = seen.lock().unwrap_or_else(|p| p.into_inner());
        for (id, started) in &decided {
            let arrivals = seen.get(&(id.clone(), cl::ClaimStatus::Approved as i32));
            for at in arrivals.into_iter().flatten() {
                f.latencies_us.push(at.saturating_duration_since(*started).as_micros() as u64);
            }
        }
    }
    f.ok = f.latencies_us.len() as u64;
    f.latencies_us.sort_unstable();
    let expected = decided.len() * PER_CITIZEN;
    println!(
        "decision → watchers, during click day at {rate:.0} claims/s: {} approvals, {} of {expected} stream deliveries, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        decided.len(),
        f.ok,
        f.percentile_ms(0.50),
        f.percentile_ms(0.99),
        f.latencies_us.last().copied().unwrap_or(0) as f64 / 1000.0,
    );
    Ok(())
}
