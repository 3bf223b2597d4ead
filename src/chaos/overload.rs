//! The `overload` scenario: click day at three times what the suite can serve. For claim
//! submission and for PIN logins in turn, the capacity is first measured alone (closed loop,
//! enough clients to saturate), then three times that rate is offered open-loop (Poisson
//! arrivals, independent of the answers), as it really arrives: through the portal's calling
//! system, over a few connections from one address, for many distinct citizens. Beside the
//! overload a citizen keeps making a cheap authenticated read.
//!
//! Checked: goodput under overload ≥ 90% of the capacity measured alone; every call not served
//! is refused fast (RESOURCE_EXHAUSTED or UNAVAILABLE with RetryInfo, p99 < 10 ms); the cheap
//! read's p99 < 50 ms; each service's peak RSS under its bound; no service restarted. Capacity
//! and overload are measured in the same run, one right after the other, so that a machine
//! busier than usual lowers both rather than failing the ratio.

use super::suite::{Suite, SERVICES};
use super::{Options, Report};
use crate::cpu;
use anyhow::Context as _;
use futures::future::BoxFuture;
use rand::{Rng, SeedableRng};
use sportello_platform::auth::{Amr, Claims, Level, Role, ISSUER};
use sportello_proto::claims::v1 as cl;
use sportello_proto::claims::v1::claims_service_client::ClaimsServiceClient;
use sportello_proto::identity::v1 as id;
use sportello_proto::identity::v1::identity_service_client::IdentityServiceClient;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::Code;
use tonic_types::StatusExt;

/// The calling system the load comes through, as the suite is configured to know it.
const PORTAL: &str = "portal";
/// The portal's connections to the gateway: a backend keeps a few, not one per citizen.
const CONNECTIONS: usize = 4;
/// The deadline the portal gives each call it forwards.
const DEADLINE: Duration = Duration::from_secs(5);
/// Citizens whose PIN logins make the login load, taken in turn: enough that none has more
/// than one or two logins in flight. A citizen's attempts are reserved before the PIN is
/// checked, at most five at once (`max_failed_attempts`), so with 32 citizens at 258 logins/s
/// a right PIN was refused INVALID_CREDENTIALS when a sixth was in flight for its citizen.
const LOGIN_CITIZENS: u64 = 128;
/// How long the suite must stay quiet after a phase before the next, in half-seconds.
const QUIET_HALF_SECONDS: u32 = 6;
/// How often the cheap read is made beside the load (well inside one principal's rate limit).
const READ_EVERY: Duration = Duration::from_millis(50);

/// More claims a second than this machine's suite files alone, for the citizens to prepare.
const MAX_CLAIMS_PER_SECOND: f64 = 6_000.0;

// What is required.
const MIN_GOODPUT: f64 = 0.90;
/// Below this even the short run fails: not a busy machine, a collapse.
const MIN_GOODPUT_EVER: f64 = 0.5;
const MAX_REFUSAL_P99_MS: f64 = 10.0;
const MAX_READ_P99_MS: f64 = 50.0;

/// One call of a workload, for the `n`-th arrival.
type Call = Arc<dyn Fn(u64) -> BoxFuture<'static, Result<(), tonic::Status>> + Send + Sync>;

/// The portal backend: its connections and its credential.
#[derive(Clone)]
struct Portal {
    channels: Vec<Channel>,
    credential: MetadataValue<Ascii>,
}

impl Portal {
    async fn connect(gateway: &str, secret: &str) -> anyhow::Result<Self> {
        let mut channels = Vec::new();
        for _ in 0..CONNECTIONS {
            channels.push(
                Endpoint::from_shared(gateway.to_owned())?.tcp_nodelay(true).connect().await?,
            );
        }
        Ok(Self { channels, credential: format!("{PORTAL}:{secret}").parse()? })
    }

    fn channel(&self, n: u64) -> Channel {
        self.channels[n as usize % self.channels.len()].clone()
    }

    /// `message` as the portal forwards it: its credential, the citizen's token if any, and a
    /// deadline.
    fn request<T>(&self, message: T, token: Option<&str>) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(DEADLINE);
        request.metadata_mut().insert(gateway::guard::CALLER_HEADER, self.credential.clone());
        if let Some(bearer) = token.and_then(|t| format!("Bearer {t}").parse().ok()) {
            request.metadata_mut().insert("authorization", bearer);
        }
        request
    }
}

/// What the calls of one phase got.
#[derive(Default)]
struct Tally {
    /// Latency of each call served, and when it was answered.
    served: Vec<(Instant, u64)>,
    /// Latency of each fast refusal (RESOURCE_EXHAUSTED or UNAVAILABLE with RetryInfo).
    refused_us: Vec<u64>,
    refusals: BTreeMap<String, u64>,
    /// Any other answer, by code and reason.
    other: BTreeMap<String, u64>,
}

impl Tally {
    fn record(&mut self, started: Instant, outcome: Result<(), tonic::Status>) {
        let now = Instant::now();
        let took = now.duration_since(started).as_micros() as u64;
        match outcome {
            Ok(()) => self.served.push((now, took)),
            Err(status) => {
                let reason = status.get_details_error_info().map(|i| i.reason).unwrap_or_default();
                let fast = matches!(status.code(), Code::ResourceExhausted | Code::Unavailable)
                    && status.get_details_retry_info().is_some();
                let key = format!("{:?} {reason}", status.code());
                if fast {
                    self.refused_us.push(took);
                    *self.refusals.entry(key).or_default() += 1;
                } else {
                    *self.other.entry(key).or_default() += 1;
                }
            }
        }
    }

    /// Calls served per second that were answered between `from` and `to`.
    fn goodput(&self, from: Instant, to: Instant) -> f64 {
        let n = self.served.iter().filter(|(at, _)| *at >= from && *at <= to).count();
        n as f64 / to.duration_since(from).as_secs_f64()
    }

    fn answered(&self) -> u64 {
        (self.served.len() + self.refused_us.len()) as u64 + self.other.values().sum::<u64>()
    }
}

/// The `p`-th percentile of `values` (sorted here), in ms.
fn p_ms(values: &[u64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// Each service's process and the harness's own, for CPU time per call.
fn processes(suite: &Suite) -> Vec<cpu::Target> {
    let mut targets: Vec<cpu::Target> = SERVICES
        .iter()
        .filter_map(|&name| Some(cpu::Target { name: name.to_owned(), pid: suite.pid(name)? }))
        .collect();
    targets.push(cpu::Target { name: "harness".to_owned(), pid: std::process::id() });
    targets
}

/// CPU µs per call of each process between `before` and now, as one figure line.
fn cpu_line(targets: &[cpu::Target], before: &[Option<Duration>], calls: u64) -> String {
    let parts: Vec<String> = targets
        .iter()
        .zip(before)
        .filter_map(|(t, start)| {
            let used = cpu::cpu_time(t.pid)?.saturating_sub((*start)?);
            Some(format!("{} {:.0}", t.name, used.as_micros() as f64 / calls.max(1) as f64))
        })
        .collect();
    format!("CPU µs/call: {}", parts.join(", "))
}

/// `clients` callers, each with one call in flight, for `duration`.
async fn closed_loop(
    call: &Call,
    clients: usize,
    duration: Duration,
    next: &Arc<AtomicU64>,
) -> Tally {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let until = Instant::now() + duration;
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let (call, next, tally) = (call.clone(), next.clone(), tally.clone());
            tokio::spawn(async move {
                while Instant::now() < until {
                    let started = Instant::now();
                    let outcome = call(next.fetch_add(1, Ordering::Relaxed)).await;
                    tally.lock().unwrap_or_else(|e| e.into_inner()).record(started, outcome);
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
    Arc::try_unwrap(tally)
        .ok()
        .map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
        .unwrap_or_default()
}

/// Calls arriving at `rate` per second for `duration` as a Poisson process, each started when
/// it arrives whatever the others got; waits for the last to be answered.
async fn open_loop(
    call: &Call,
    rate: f64,
    duration: Duration,
    next: &Arc<AtomicU64>,
    rng: &mut rand::rngs::StdRng,
) -> (Tally, u64) {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let start = Instant::now();
    let end = start + duration;
    let mut arrival = start;
    let mut calls = Vec::new();
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        while arrival <= now {
            let (call, tally) = (call.clone(), tally.clone());
            let n = next.fetch_add(1, Ordering::Relaxed);
            calls.push(tokio::spawn(async move {
                let started = Instant::now();
                let outcome = call(n).await;
                tally.lock().unwrap_or_else(|e| e.into_inner()).record(started, outcome);
            }));
            // Exponential gaps: arrivals independent of each other and of the answers.
            let u: f64 = rng.random_range(f64::EPSILON..1.0);
            arrival += Duration::from_secs_f64(-u.ln() / rate);
        }
        tokio::time::sleep_until(arrival.min(end).into()).await;
    }
    let offered = calls.len() as u64;
    for c in calls {
        let _ = c.await;
    }
    let tally = Arc::try_unwrap(tally)
        .ok()
        .map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
        .unwrap_or_default();
    (tally, offered)
}

/// A cheap authenticated read made every [`READ_EVERY`] until `until`: its latencies and the
/// answers that were not OK.
fn cheap_reads(
    read: Call,
    until: Instant,
) -> tokio::task::JoinHandle<(Vec<u64>, BTreeMap<String, u64>)> {
    tokio::spawn(async move {
        let (mut latencies, mut failed) = (Vec::new(), BTreeMap::new());
        let mut tick = tokio::time::interval(READ_EVERY);
        // A slow read is not made up for by a burst of them: the ticks missed meanwhile went
        // out at once, over the citizen's rate limit, and were refused RATE_LIMITED.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n = 0;
        loop {
            tick.tick().await;
            if Instant::now() >= until {
                break;
            }
            let started = Instant::now();
            match read(n).await {
                Ok(()) => latencies.push(started.elapsed().as_micros() as u64),
                Err(status) => {
                    let reason =
                        status.get_details_error_info().map(|i| i.reason).unwrap_or_default();
                    *failed.entry(format!("{:?} {reason}", status.code())).or_default() += 1;
                }
            }
            n += 1;
        }
        (latencies, failed)
    })
}

/// One workload: how it is called, with how many clients its capacity is measured, and the
/// cheap read beside it.
struct Workload {
    name: &'static str,
    call: Call,
    clients: usize,
    read: Call,
}

struct Durations {
    capacity: Duration,
    overload: Duration,
    /// The short version (CI): the bounds that depend on the machine's spare CPU are reported,
    /// not enforced (see `measure`).
    short: bool,
}

/// Measures `w` alone, then at three times that, and checks what it must.
async fn measure(
    suite: &Suite,
    w: &Workload,
    d: &Durations,
    next: &Arc<AtomicU64>,
    rng: &mut rand::rngs::StdRng,
    report: &mut Report,
    before_overload: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<f64> {
    let targets = processes(suite);
    // The machine's own noise: the cheap read on the idle suite.
    let (idle, _) = cheap_reads(w.read.clone(), Instant::now() + Duration::from_secs(2)).await?;
    report.figure(format!(
        "{}: cheap read on the idle suite: p50 {:.1} ms, p99 {:.1} ms",
        w.name,
        p_ms(&idle, 0.50),
        p_ms(&idle, 0.99),
    ));
    // A little unmeasured load first: connections, caches, the database's pages.
    closed_loop(&w.call, w.clients, Duration::from_secs(1), next).await;

    let cpu_before = cpu::snapshot(&targets);
    let started = Instant::now();
    let alone = closed_loop(&w.call, w.clients, d.capacity, next).await;
    let capacity = alone.goodput(started, started + d.capacity);
    report.figure(format!(
        "{}: capacity alone {capacity:.0}/s ({} clients, closed loop, {:.0} s; p50 {:.1} ms, p99 {:.1} ms)",
        w.name,
        w.clients,
        d.capacity.as_secs_f64(),
        p_ms(&alone.served.iter().map(|s| s.1).collect::<Vec<_>>(), 0.50),
        p_ms(&alone.served.iter().map(|s| s.1).collect::<Vec<_>>(), 0.99),
    ));
    report.figure(format!("{}:   {}", w.name, cpu_line(&targets, &cpu_before, alone.answered())));
    if !alone.other.is_empty() || !alone.refusals.is_empty() {
        report.figure(format!(
            "{}:   alone, not served: {:?} {:?}",
            w.name, alone.refusals, alone.other
        ));
    }
    anyhow::ensure!(capacity > 0.0, "{}: nothing served alone: {:?}", w.name, alone.other);
    if !alone.other.is_empty() {
        // A capacity measured with calls that failed for another reason than load is not the
        // suite's capacity, and three times it is not three times the load it can serve.
        report.violation(format!(
            "{}: calls alone neither served nor refused for load: {:?}",
            w.name, alone.other
        ));
    }

    before_overload.await?;
    let rate = 3.0 * capacity;
    let reads = cheap_reads(w.read.clone(), Instant::now() + d.overload);
    let cpu_before = cpu::snapshot(&targets);
    let started = Instant::now();
    let (over, offered) = open_loop(&w.call, rate, d.overload, next, rng).await;
    let goodput = over.goodput(started, started + d.overload);
    let (read_latencies, read_failed) = reads.await?;
    let read_failures: u64 = read_failed.values().sum();
    let refused = over.refused_us.len();
    report.figure(format!(
        "{}: offered {rate:.0}/s open-loop (Poisson) for {:.0} s, {offered} calls: goodput {goodput:.0}/s = {:.0}% of capacity",
        w.name,
        d.overload.as_secs_f64(),
        100.0 * goodput / capacity,
    ));
    report.figure(format!(
        "{}:   served {} (p50 {:.1} ms, p99 {:.1} ms); refused fast {refused} (p50 {:.2} ms, p99 {:.2} ms) {:?}",
        w.name,
        over.served.len(),
        p_ms(&over.served.iter().map(|s| s.1).collect::<Vec<_>>(), 0.50),
        p_ms(&over.served.iter().map(|s| s.1).collect::<Vec<_>>(), 0.99),
        p_ms(&over.refused_us, 0.50),
        p_ms(&over.refused_us, 0.99),
        over.refusals,
    ));
    report.figure(format!("{}:   {}", w.name, cpu_line(&targets, &cpu_before, over.answered())));
    report.figure(format!(
        "{}:   cheap read beside it: {} reads, p50 {:.1} ms, p99 {:.1} ms, {read_failures} failed {read_failed:?}",
        w.name,
        read_latencies.len(),
        p_ms(&read_latencies, 0.50),
        p_ms(&read_latencies, 0.99),
    ));
    // Whatever the machine: nothing answered but served or refused fast with when to retry,
    // no read failed, and no collapse (a debug build at three times its capacity served a fifth
    // of it, its calls cancelled at their deadline).
    if !over.other.is_empty() {
        report.violation(format!(
            "{}: calls neither served nor refused fast: {:?}",
            w.name, over.other
        ));
    }
    if read_failures > 0 {
        report.violation(format!(
            "{}: {read_failures} cheap reads beside the overload failed: {read_failed:?}",
            w.name
        ));
    }
    if goodput < MIN_GOODPUT_EVER * capacity {
        report.violation(format!(
            "{}: goodput {goodput:.0}/s under 3× load collapsed below {:.0}% of the capacity alone ({capacity:.0}/s)",
            w.name,
            100.0 * MIN_GOODPUT_EVER
        ));
    }
    // The bounds that hold only while the machine has the CPU to spare for them: the load
    // generator shares the suite's cores, and on a shared 2-core CI machine a neighbour's
    // build moves them by more than the margin. Enforced by the full run; the short one
    // reports them.
    let mut bound = |broken: bool, what: String| match (broken, d.short) {
        (false, _) => {}
        (true, false) => report.violation(what),
        (true, true) => {
            report.figure(format!("{}:   over its bound (full run only): {what}", w.name))
        }
    };
    bound(
        goodput < MIN_GOODPUT * capacity,
        format!(
            "{}: goodput {goodput:.0}/s under 3× load is below {:.0}% of the capacity alone ({capacity:.0}/s)",
            w.name,
            100.0 * MIN_GOODPUT
        ),
    );
    let refusal_p99 = p_ms(&over.refused_us, 0.99);
    bound(
        refusal_p99 >= MAX_REFUSAL_P99_MS,
        format!("{}: refusals p99 {refusal_p99:.2} ms ≥ {MAX_REFUSAL_P99_MS:.1} ms", w.name),
    );
    let read_p99 = p_ms(&read_latencies, 0.99);
    bound(
        read_p99 >= MAX_READ_P99_MS,
        format!(
            "{}: the cheap read beside the overload: p99 {read_p99:.1} ms ≥ {MAX_READ_P99_MS:.1} ms",
            w.name
        ),
    );
    settle(suite, &w.read).await?;
    Ok(capacity)
}

/// Waits until the suite answers `read` again and its services are quiet (together under a
/// tenth of a core for [`QUIET_HALF_SECONDS`] half-seconds in a row): what the overload left
/// admitted is worked off after its callers have gone, and its notices relayed and sent.
/// Without this the next phase's preparation was refused GATEWAY_OVERLOADED, and the logins'
/// capacity was measured beside the claims' backlog (notify-svc at 16 ms of CPU per login) and
/// came out at half; one quiet half-second was a lull between two batches of that backlog.
async fn settle(suite: &Suite, read: &Call) -> anyhow::Result<()> {
    let until = Instant::now() + Duration::from_secs(300);
    let services: Vec<cpu::Target> =
        processes(suite).into_iter().filter(|t| t.pid != std::process::id()).collect();
    let busy = |before: &[Option<Duration>]| -> Duration {
        services
            .iter()
            .zip(before)
            .filter_map(|(t, start)| Some(cpu::cpu_time(t.pid)?.saturating_sub((*start)?)))
            .sum()
    };
    let (mut n, mut quiet) = (0, 0);
    loop {
        anyhow::ensure!(Instant::now() < until, "the suite did not settle within 300 s");
        let before = cpu::snapshot(&services);
        let answered = read(n).await;
        n += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
        quiet = if answered.is_ok() && busy(&before) < Duration::from_millis(50) {
            quiet + 1
        } else {
            0
        };
        if quiet == QUIET_HALF_SECONDS {
            return Ok(());
        }
    }
}

/// A citizen's session token, signed with identity-svc's own key as a login signs it: the claim
/// load needs tens of thousands of distinct citizens, and what it measures is filing, not
/// logging in (the login load logs in for real).
struct Tokens(identity_svc::keys::Signer);

impl Tokens {
    fn load(suite: &Suite) -> anyhow::Result<Self> {
        let key = suite.data_dir().join("keys/session-ed25519.der");
        anyhow::ensure!(key.exists(), "no identity key at {}", key.display());
        Ok(Self(identity_svc::keys::Signer::load_or_generate(&key)?))
    }

    /// The fiscal codes and signed tokens of citizens `from..from + n`, made before a phase
    /// rather than during it: signing is the load generator's own cost, and at three times the
    /// capacity it took a third of a core the suite's answers were then waiting for.
    fn sign_ahead(&self, signed: &Signed, from: u64, n: u64) {
        let made: Vec<_> = (from..from + n)
            .map(|i| {
                let cf = crate::bench::citizen(i).fiscal_code;
                let token = self.citizen(&cf);
                (i, (cf, token))
            })
            .collect();
        signed.lock().unwrap_or_else(|e| e.into_inner()).extend(made);
    }

    fn citizen(&self, fiscal_code: &str) -> String {
        let now = sportello_platform::now_millis() / 1000;
        let claims = Claims {
            iss: ISSUER.into(),
            sub: fiscal_code.into(),
            role: Role::Citizen,
            level: Level::Simplified,
            amr: Amr::Pin,
            sid: uuid::Uuid::new_v4().to_string(),
            iat: now,
            exp: now + 3600,
            acr: None,
        };
        self.0.sign(&claims).unwrap_or_default()
    }
}

/// Citizens' fiscal codes and tokens signed ahead of the calls that use them, by number.
type Signed = Arc<Mutex<std::collections::HashMap<u64, (String, String)>>>;

/// The back office's session, for loading the registers.
async fn back_office(suite: &Suite, channel: Channel) -> anyhow::Result<String> {
    let account = suite
        .staff()
        .iter()
        .find(|a| a.username.contains("backoffice"))
        .context("no demo back-office account")?;
    let login = id::LoginStaffRequest {
        username: account.username.clone(),
        password: account.password.clone(),
    };
    let reply = IdentityServiceClient::new(channel).login_staff(login).await?;
    Ok(reply.into_inner().session.context("no session")?.access_token)
}

/// Puts citizens `from..from + n` on the insured-positions registry, each eligible.
async fn registry(channel: Channel, token: &str, from: u64, n: u64) -> anyhow::Result<()> {
    let mut csv = String::from("fiscal_code,schemes,vat_from,vat_to,pensioner\n");
    for i in from..from + n {
        let cf = crate::bench::citizen(i).fiscal_code;
        csv.push_str(&format!("{cf},GESTIONE_SEPARATA:2012-01-01:,2012-01-01,,0\n"));
    }
    crate::clickday::import_registry_csv(channel, token, csv).await
}

/// The claim of citizen `cf`, as clickday files it.
fn claim(cf: &str) -> cl::SubmitClaimRequest {
    cl::SubmitClaimRequest {
        idempotency_key: format!("overload-{cf}"),
        ..crate::clickday::claim(cf)
    }
}

/// Citizens `from..from + n` on the register of residents, each with a PIN requested and its
/// first half read from the SMS the suite sent: (fiscal code, simplified PIN).
async fn login_citizens(
    suite: &Suite,
    channel: Channel,
    token: &str,
    from: u64,
    n: u64,
) -> anyhow::Result<Vec<(String, String)>> {
    let records: Vec<id::ResidentRecord> = (from..from + n)
        .map(|i| {
            let form = crate::bench::citizen(i);
            id::ResidentRecord {
                line: (i - from) as i64 + 2,
                fiscal_code: form.fiscal_code,
                personal_data: form.personal_data,
                residence: form.residence,
            }
        })
        .collect();
    crate::import::import_all(channel.clone(), token, &records).await?;
    let mut identity = IdentityServiceClient::new(channel);
    for i in from..from + n {
        identity.request_pin(crate::bench::citizen(i)).await.context("PIN request")?;
    }
    let sms = suite.data_dir().join("outbox/sms.jsonl");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(&sms).unwrap_or_default();
        let mut found = Vec::new();
        for i in from..from + n {
            let number = format!("{:07}", i % 10_000_000);
            let half = text
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|l| l["to"].as_str().is_some_and(|to| to.ends_with(&number)))
                .and_then(|l| {
                    let text = l["text"].as_str()?;
                    let after = text.split_once(" è ")?.1;
                    Some(after.split(|c: char| c == '.' || c.is_whitespace()).next()?.to_owned())
                });
            if let Some(half) = half {
                found.push((crate::bench::citizen(i).fiscal_code, half));
            }
        }
        if found.len() as u64 == n {
            return Ok(found);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} of {n} first halves sent within 60 s",
            found.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn run(options: &Options) -> anyhow::Result<Report> {
    let secret: String = (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
    let digest = gateway::config::sha256_hex(secret.as_bytes());
    let suite = Suite::start(options, |cmd| {
        // Every service on a free port: the default ones may be another suite's on this machine.
        for service in ["IDENTITY", "CLAIMS", "NOTIFY"] {
            cmd.env(format!("SPORTELLO_{service}__LISTEN"), "127.0.0.1:0");
        }
        cmd.env(
            format!("SPORTELLO_GATEWAY__CALLERS__{}__SECRET_SHA256", PORTAL.to_uppercase()),
            &digest,
        );
    })
    .await?;
    let mut report = Report::default();
    let outcome = drive(&suite, options, &secret, &mut report).await;
    if outcome.is_err() || !report.violations.is_empty() {
        // Kept, for the violation to be looked into once the suite's directory is gone.
        let kept = std::env::temp_dir()
            .join(format!("sportello-chaos-overload-{}.log", options.seed.unwrap_or_default()));
        if std::fs::copy(suite.log(), &kept).is_ok() {
            eprintln!("the suite's log: {}", kept.display());
        }
    }
    let stopped = suite.stop().await;
    outcome?;
    stopped?;
    Ok(report)
}

async fn drive(
    suite: &Suite,
    options: &Options,
    secret: &str,
    report: &mut Report,
) -> anyhow::Result<()> {
    let seed = options.seed.unwrap_or_default();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (capacity, overload) = match (options.short, options.duration) {
        (_, Some(overload)) => (overload.mul_f64(0.5).max(Duration::from_secs(5)), overload),
        (true, None) => (Duration::from_secs(8), Duration::from_secs(12)),
        (false, None) => (Duration::from_secs(30), Duration::from_secs(60)),
    };
    let d = Durations { capacity, overload, short: options.short };
    let pids: Vec<Option<u32>> = SERVICES.iter().map(|s| suite.pid(s)).collect();
    let memory = PeakMemory::sample(suite);
    let gateway = suite.url("gateway");
    let portal = Portal::connect(&gateway, secret).await?;
    let admin = Endpoint::from_shared(gateway.clone())?.connect().await?;
    let office = back_office(suite, admin.clone()).await?;
    let tokens = Arc::new(Tokens::load(suite)?);
    // Citizens numbered from the seed, so a replay meets the same ones.
    let first = (seed % 1000) * 1_000_000;

    // Claims: each arrival a new citizen on the registry, filing one claim through the portal.
    let registered = Arc::new(AtomicU64::new(first));
    let next_claimant = Arc::new(AtomicU64::new(first));
    // Enough for the capacity phase (and the second of warm-up before it) of a fast machine:
    // with fewer, the claims beyond them were refused NO_INSURED_POSITION (not a refusal for
    // load), and a full run's 30 s at 2,600 claims/s measured a capacity of 916/s.
    let initial = (MAX_CLAIMS_PER_SECOND * (d.capacity.as_secs_f64() + 1.0)) as u64;
    let t0 = Instant::now();
    registry(admin.clone(), &office, first, initial).await?;
    registered.fetch_add(initial, Ordering::Relaxed);
    report.figure(format!(
        "claims: {initial} citizens on the registry in {:.1} s",
        t0.elapsed().as_secs_f64()
    ));
    let signed = Signed::default();
    tokens.sign_ahead(&signed, first, initial);
    let submit: Call = {
        let (portal, tokens, signed) = (portal.clone(), tokens.clone(), signed.clone());
        Arc::new(move |n| {
            let (portal, tokens) = (portal.clone(), tokens.clone());
            let ahead = signed.lock().unwrap_or_else(|e| e.into_inner()).remove(&n);
            Box::pin(async move {
                let (cf, token) = ahead.unwrap_or_else(|| {
                    let cf = crate::bench::citizen(n).fiscal_code;
                    let token = tokens.citizen(&cf);
                    (cf, token)
                });
                let request = portal.request(claim(&cf), Some(&token));
                ClaimsServiceClient::new(portal.channel(n)).submit_claim(request).await.map(|_| ())
            })
        })
    };
    let reader = crate::bench::citizen(first + 999_999).fiscal_code;
    let list_own: Call = {
        let (portal, token) = (portal.clone(), tokens.citizen(&reader));
        Arc::new(move |n| {
            let (portal, token) = (portal.clone(), token.clone());
            Box::pin(async move {
                let request = portal.request(cl::ListClaimsRequest::default(), Some(&token));
                ClaimsServiceClient::new(portal.channel(n)).list_claims(request).await.map(|_| ())
            })
        })
    };
    // Enough clients for group commit to batch, few enough that a slow machine's batch still
    // ends within the portal's deadline.
    let claims = Workload { name: "claims", call: submit, clients: 16, read: list_own };
    // The citizens the overload needs, once the capacity (and so its rate) is known.
    let registry_for_overload = {
        let (admin, office, registered, next_claimant) =
            (admin.clone(), office.clone(), registered.clone(), next_claimant.clone());
        let (tokens, signed) = (tokens.clone(), signed.clone());
        let overload = d.overload;
        let capacity_window = d.capacity;
        async move {
            // Arrivals so far tell the capacity: three times it, for the overload, and a margin.
            let used = next_claimant.load(Ordering::Relaxed) - first;
            let rate = used as f64 / (capacity_window.as_secs_f64() + 1.0);
            let needed = (3.0 * rate * overload.as_secs_f64() * 1.3) as u64 + 1000;
            let have = registered
                .load(Ordering::Relaxed)
                .saturating_sub(next_claimant.load(Ordering::Relaxed));
            if needed > have {
                let from = registered.load(Ordering::Relaxed);
                registry(admin, &office, from, needed - have).await?;
                registered.fetch_add(needed - have, Ordering::Relaxed);
            }
            // Those of the capacity phase are spent; the overload's are signed now.
            signed.lock().unwrap_or_else(|e| e.into_inner()).clear();
            let from = next_claimant.load(Ordering::Relaxed);
            tokens.sign_ahead(&signed, from, needed);
            anyhow::Ok(())
        }
    };
    measure(suite, &claims, &d, &next_claimant, &mut rng, report, registry_for_overload).await?;
    let used = next_claimant.load(Ordering::Relaxed);
    if used > registered.load(Ordering::Relaxed) {
        report.violation(format!(
            "claims: {} arrivals for citizens not yet on the registry (the run under-prepared)",
            used - registered.load(Ordering::Relaxed)
        ));
    }

    // PIN logins: real citizens with the simplified PIN of a real PIN request.
    let t0 = Instant::now();
    let citizens = Arc::new(
        login_citizens(suite, admin.clone(), &office, first + 900_000, LOGIN_CITIZENS).await?,
    );
    report.figure(format!(
        "logins: {LOGIN_CITIZENS} citizens with a PIN requested and its first half delivered in {:.1} s",
        t0.elapsed().as_secs_f64()
    ));
    let login: Call = {
        let (portal, citizens) = (portal.clone(), citizens.clone());
        Arc::new(move |n| {
            let (portal, citizens) = (portal.clone(), citizens.clone());
            Box::pin(async move {
                let (cf, pin) = &citizens[n as usize % citizens.len()];
                let request = portal.request(
                    id::LoginWithPinRequest { fiscal_code: cf.clone(), pin: pin.clone() },
                    None,
                );
                IdentityServiceClient::new(portal.channel(n))
                    .login_with_pin(request)
                    .await
                    .map(|_| ())
            })
        })
    };
    let (cf, pin) = citizens[0].clone();
    let session = IdentityServiceClient::new(admin.clone())
        .login_with_pin(id::LoginWithPinRequest { fiscal_code: cf, pin })
        .await?
        .into_inner()
        .session
        .context("no session")?;
    let profile: Call = {
        let (portal, token) = (portal.clone(), session.access_token);
        Arc::new(move |n| {
            let (portal, token) = (portal.clone(), token.clone());
            Box::pin(async move {
                let request = portal.request(id::GetProfileRequest {}, Some(&token));
                IdentityServiceClient::new(portal.channel(n)).get_profile(request).await.map(|_| ())
            })
        })
    };
    let logins = Workload { name: "logins", call: login, clients: 16, read: profile };
    let next_login = Arc::new(AtomicU64::new(0));
    measure(suite, &logins, &d, &next_login, &mut rng, report, async { Ok(()) }).await?;

    // What each service held at its peak, and whether any was restarted.
    for (name, before) in SERVICES.iter().zip(&pids) {
        let now = suite.pid(name);
        if now.is_none() || now != *before {
            report.violation(format!(
                "{name}: process {before:?} is now {now:?} (crashed or restarted)"
            ));
        }
    }
    let anon = memory.stop().await;
    let mut rss = Vec::new();
    for (name, anon) in SERVICES.iter().zip(anon) {
        let peak = suite.peak_rss_kib(name).unwrap_or_default();
        let bound = rss_bound_mib(name);
        rss.push(format!("{name} {} MiB ({} MiB with mapped files)", anon / 1024, peak / 1024));
        if anon / 1024 > bound {
            report.violation(format!(
                "{name}: peak anonymous RSS {} MiB over its bound of {bound} MiB",
                anon / 1024
            ));
        }
    }
    report.figure(format!("peak RSS: {}", rss.join(", ")));
    Ok(())
}

/// Each service's peak anonymous RSS, sampled while the scenario runs: the kernel keeps the
/// peak of all resident pages (`VmHWM`), which counts the database file's pages SQLite maps
/// (up to 256 MiB of them, the file's cache, not memory the service holds).
struct PeakMemory {
    stop: tokio::sync::oneshot::Sender<()>,
    sampler: tokio::task::JoinHandle<Vec<u64>>,
}

impl PeakMemory {
    fn sample(suite: &Suite) -> Self {
        let pids: Vec<Option<u32>> = SERVICES.iter().map(|s| suite.pid(s)).collect();
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let sampler = tokio::spawn(async move {
            let mut peaks = vec![0; pids.len()];
            loop {
                for (peak, pid) in peaks.iter_mut().zip(&pids) {
                    let now = pid.and_then(|pid| cpu::status_kib(pid, "RssAnon:"));
                    *peak = (*peak).max(now.unwrap_or_default());
                }
                tokio::select! {
                    _ = &mut stopped => return peaks,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
        });
        Self { stop, sampler }
    }

    async fn stop(self) -> Vec<u64> {
        let _ = self.stop.send(());
        self.sampler.await.unwrap_or_default()
    }
}

/// What each service may hold at its peak under overload, in MiB.
fn rss_bound_mib(name: &str) -> u64 {
    let cpus = std::thread::available_parallelism().map(|n| n.get() as u64).unwrap_or(2);
    match name {
        // Each argon2id hashing thread keeps its 19 MiB; the rest as any service.
        "identity" => 256 + 19 * cpus,
        _ => 256,
    }
}
