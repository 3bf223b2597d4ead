//! The `crash` scenario: a mixed load through the gateway (PIN requests, first-access PIN
//! changes and logins, claims with idempotency keys against a ceiling the load exhausts, payment
//! batches by the back office) while each process of the suite is killed with SIGKILL in turn
//! and `sportello up` starts it again. Clients retry with their idempotency keys until they get
//! an answer that is not a failure of the suite. Then, once every outbox has drained: each call
//! that got OK is durable (the claim with exactly one receipt, the PIN's two halves, the new
//! PIN), each outbox row's message was delivered exactly once as the local sinks hold it, no
//! refused call left a record, the ceiling is exact to the cent, and every retry converges on
//! the first answer.

use super::suite::{serving, Suite};
use super::{Options, Report};
use crate::bench;
use crate::clickday::{bearer, claim};
use anyhow::Context as _;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sportello_proto::claims::v1 as cl;
use sportello_proto::claims::v1::claims_back_office_service_client::ClaimsBackOfficeServiceClient;
use sportello_proto::claims::v1::claims_service_client::ClaimsServiceClient;
use sportello_proto::identity::v1 as id;
use sportello_proto::identity::v1::identity_service_client::IdentityServiceClient;
use sqlx::Row as _;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

/// The benefit claimed, and what each claim reserves of its ceiling.
const BENEFIT: &str = "PROFESSIONISTI_COCOCO";
const AMOUNT_CENTS: i64 = 60_000;
/// Each call's deadline: long enough for a debug build on a loaded machine, whose slow answers
/// must not turn into a storm of retries.
const DEADLINE: Duration = Duration::from_secs(20);
/// Calls in flight at once across all clients, as a portal backend bounds its own.
const IN_FLIGHT: usize = 32;
/// The processes killed, in this order.
const KILLED: [&str; 4] = ["gateway", "identity", "claims", "notify"];

/// How big a run is.
struct Plan {
    /// Citizens who file a claim (one in ten a pensioner, whom the law excludes).
    claimants: u64,
    /// Claims the ceiling leaves room for: fewer than the eligible claimants.
    room: i64,
    /// New citizens who request a PIN during the kills.
    pin_requests: u64,
    /// Citizens with a PIN of their own, who log in and change it during the kills.
    pin_changes: u64,
    /// Load between two kills, after the killed process is back.
    between_kills: Duration,
}

impl Plan {
    fn of(options: &Options) -> Self {
        let mut plan = if options.short {
            Plan {
                claimants: 40,
                room: 25,
                pin_requests: 16,
                pin_changes: 4,
                between_kills: Duration::from_secs(3),
            }
        } else {
            Plan {
                claimants: 400,
                room: 250,
                pin_requests: 120,
                pin_changes: 16,
                between_kills: Duration::from_secs(15),
            }
        };
        if let Some(d) = options.duration {
            plan.between_kills = d / (KILLED.len() as u32 + 1);
        }
        plan
    }
}

/// Which codes mean "the suite failed this call, try again": a retry with the same idempotency
/// key is then safe, and must converge.
fn transient(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Unknown
            | Code::Internal
            | Code::ResourceExhausted
            | Code::Aborted
    )
}

/// Every answer of the run: counts by kind and outcome, and when each OK came.
struct Tally {
    outcomes: Mutex<BTreeMap<(&'static str, String), u64>>,
    /// (kind, when the call started, when it answered OK).
    oks: Mutex<Vec<(&'static str, Instant, Instant)>>,
    /// The first answer of each kind and unexpected code (INTERNAL, UNKNOWN), for the report.
    unexpected: Mutex<BTreeMap<(&'static str, String), String>>,
    /// Turns to call (see [`IN_FLIGHT`]).
    in_flight: tokio::sync::Semaphore,
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            outcomes: Mutex::default(),
            oks: Mutex::default(),
            unexpected: Mutex::default(),
            in_flight: tokio::sync::Semaphore::new(IN_FLIGHT),
        }
    }
}

impl Tally {
    fn count<T>(&self, kind: &'static str, started: Instant, answer: &Result<T, tonic::Status>) {
        let outcome = match answer {
            Ok(_) => {
                let mut oks = self.oks.lock().unwrap_or_else(|e| e.into_inner());
                oks.push((kind, started, Instant::now()));
                "OK".to_owned()
            }
            Err(status) => {
                let code = format!("{:?}", status.code());
                if matches!(status.code(), Code::Internal | Code::Unknown) {
                    let mut unexpected = self.unexpected.lock().unwrap_or_else(|e| e.into_inner());
                    unexpected.entry((kind, code.clone())).or_insert(status.message().to_owned());
                }
                code
            }
        };
        let mut outcomes = self.outcomes.lock().unwrap_or_else(|e| e.into_inner());
        *outcomes.entry((kind, outcome)).or_default() += 1;
    }

    /// Calls `call` until it gets an answer that is not the suite's failure (at most for two
    /// minutes), each attempt counted; the last answer.
    async fn settle<T, F, Fut>(&self, kind: &'static str, mut call: F) -> Result<T, tonic::Status>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let give_up = Instant::now() + Duration::from_secs(300);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let answer = {
                let _turn = self.in_flight.acquire().await.expect("never closed");
                let started = Instant::now();
                let answer = tokio::time::timeout(DEADLINE + Duration::from_secs(1), call())
                    .await
                    .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("client gave up")));
                self.count(kind, started, &answer);
                answer
            };
            match answer {
                Err(s) if transient(s.code()) && Instant::now() < give_up => {
                    let wait = sportello_platform::backoff::backoff_ms(attempt, 250, 5_000);
                    tokio::time::sleep(Duration::from_millis(wait as u64)).await;
                }
                answer => return answer,
            }
        }
    }
}

/// A request with a deadline, as every client here sends it.
fn timed<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(DEADLINE);
    request
}

fn authorized<T>(token: &str, message: T) -> Result<tonic::Request<T>, tonic::Status> {
    let mut request =
        bearer(token, message).map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
    request.set_timeout(DEADLINE);
    Ok(request)
}

/// Where the services keep their records: each one's SQLite file, or its schema on PostgreSQL.
struct Records {
    data_dir: std::path::PathBuf,
    postgres: Option<String>,
}

impl Records {
    async fn pool(&self, service: &str) -> anyhow::Result<sqlx::AnyPool> {
        sqlx::any::install_default_drivers();
        let url = match &self.postgres {
            Some(url) => url.clone(),
            None => sportello_platform::db::sqlite_url(&self.data_dir, service),
        };
        Ok(sqlx::AnyPool::connect(&url).await?)
    }

    fn table(&self, service: &str, table: &str) -> String {
        match self.postgres {
            Some(_) => format!("{service}.{table}"),
            None => table.to_owned(),
        }
    }

    async fn count(&self, service: &str, table: &str, filter: &str) -> anyhow::Result<i64> {
        let sql = format!("SELECT COUNT(*) FROM {} WHERE {filter}", self.table(service, table));
        Ok(sqlx::query_scalar(&sql).fetch_one(&self.pool(service).await?).await?)
    }
}

/// Every claim id a claimant was answered OK with, or the last error's code and message.
type ClaimAnswer = Result<Vec<String>, (Code, String)>;

/// What the citizens and the back office were answered, in the end.
#[derive(Default)]
struct Answers {
    /// Claimant → every OK receipt's claim id (one expected), or the last error's code and
    /// message (a refusal, or the suite's failure when the client gave up).
    claims: Mutex<HashMap<String, ClaimAnswer>>,
    /// Citizens whose PIN request got OK.
    pins_requested: Mutex<Vec<String>>,
    /// Citizens whose PIN change got OK: (fiscal code, old PIN, new PIN).
    pins_changed: Mutex<Vec<(String, String, String)>>,
    /// Payment batches confirmed.
    batches_confirmed: Mutex<Vec<String>>,
}

pub async fn run(options: &Options) -> anyhow::Result<Report> {
    let plan = Plan::of(options);
    let suite = Suite::start(options, |_| {}).await?;
    let outcome = scenario(&suite, &plan).await;
    if outcome.as_ref().map_or(true, |r| !r.violations.is_empty()) {
        suite.print_log_tail(40);
    }
    suite.stop().await?;
    outcome
}

async fn channel(suite: &Suite) -> anyhow::Result<Channel> {
    // Lazy: it connects again by itself after the gateway is back.
    Ok(Endpoint::from_shared(suite.url("gateway"))?
        .connect_timeout(Duration::from_secs(1))
        .connect_lazy())
}

async fn scenario(suite: &Suite, plan: &Plan) -> anyhow::Result<Report> {
    let mut report = Report::default();
    let gateway = channel(suite).await?;
    let backoffice = suite
        .staff()
        .iter()
        .find(|a| a.username.contains("backoffice"))
        .context("no demo back-office account")?;
    let bo_token = IdentityServiceClient::new(gateway.clone())
        .login_staff(id::LoginStaffRequest {
            username: backoffice.username.clone(),
            password: backoffice.password.clone(),
        })
        .await?
        .into_inner()
        .session
        .context("no session")?
        .access_token;
    let prepared = Instant::now();
    let (claimants, requesters, changers) = prepare(suite, plan, &gateway, &bo_token).await?;
    report.figure(format!(
        "prepared in {:.0} s: {} claimants logged in, {} PIN requesters on the register, {} \
         citizens with a PIN of their own; ceiling set to {} claims",
        prepared.elapsed().as_secs_f64(),
        claimants.len(),
        requesters.len(),
        changers.len(),
        plan.room
    ));

    let tally = Arc::new(Tally::default());
    let answers = Arc::new(Answers::default());
    let main_phase = plan.between_kills * (KILLED.len() as u32 + 1);
    let stop = tokio_util::sync::CancellationToken::new();
    let mut load = tokio::task::JoinSet::new();
    let spread = |n: usize, i: usize| main_phase.mul_f64(i as f64 / n.max(1) as f64);
    for (i, (cf, token)) in claimants.iter().cloned().enumerate() {
        let (tally, answers, gateway) = (tally.clone(), answers.clone(), gateway.clone());
        let after = spread(claimants.len(), i);
        load.spawn(async move {
            tokio::time::sleep(after).await;
            file_claim(&tally, &answers, gateway, &cf, &token).await;
        });
    }
    for (i, form) in requesters.iter().cloned().enumerate() {
        let (tally, answers, gateway) = (tally.clone(), answers.clone(), gateway.clone());
        let after = spread(requesters.len(), i);
        load.spawn(async move {
            tokio::time::sleep(after).await;
            let cf = form.fiscal_code.clone();
            let identity = IdentityServiceClient::new(gateway);
            let answer = tally
                .settle("RequestPin", || {
                    let (mut identity, form) = (identity.clone(), form.clone());
                    async move { identity.request_pin(timed(form)).await }
                })
                .await;
            if answer.is_ok() {
                answers.pins_requested.lock().unwrap_or_else(|e| e.into_inner()).push(cf);
            }
        });
    }
    for (i, (cf, pin)) in changers.iter().cloned().enumerate() {
        let (tally, answers, gateway, stop) =
            (tally.clone(), answers.clone(), gateway.clone(), stop.clone());
        let after = spread(changers.len(), i);
        load.spawn(async move {
            logins_and_a_change(&tally, &answers, gateway, &cf, &pin, after, stop).await;
        });
    }
    for _ in 0..2 {
        let (tally, gateway, stop) = (tally.clone(), gateway.clone(), stop.clone());
        load.spawn(async move { catalogue_reads(&tally, gateway, stop).await });
    }
    {
        let (tally, answers, gateway, stop) =
            (tally.clone(), answers.clone(), gateway.clone(), stop.clone());
        let token = bo_token.clone();
        load.spawn(async move { payment_batches(&tally, &answers, gateway, &token, stop).await });
    }

    // The kills, one process at a time, each once the one before is back.
    let started = Instant::now();
    let mut kills = Vec::new();
    tokio::time::sleep(plan.between_kills).await;
    for name in KILLED {
        let pid = suite.pid(name).with_context(|| format!("{name} is not running"))?;
        kill(Pid::from_raw(pid as i32), Signal::SIGKILL)?;
        let killed_at = Instant::now();
        let back = back_again(suite, name, pid).await;
        match back {
            Some(after) => kills.push((name, killed_at, after)),
            None => report.violation(format!("{name} was not serving again 90 s after its kill")),
        }
        tokio::time::sleep(plan.between_kills).await;
    }
    stop.cancel();
    while let Some(done) = load.join_next().await {
        done?;
    }
    let load_time = started.elapsed();

    // Retries converge: each claimant files again with the same key and gets what it got.
    converge(&tally, &answers, &gateway, &claimants, &mut report).await;

    report.figure(format!("load and kills: {:.0} s", load_time.as_secs_f64()));
    {
        let outcomes = tally.outcomes.lock().unwrap_or_else(|e| e.into_inner());
        let mut by_kind: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for ((kind, outcome), n) in outcomes.iter() {
            by_kind.entry(kind).or_default().push(format!("{n} {outcome}"));
        }
        for (kind, outcomes) in by_kind {
            report.figure(format!("calls {kind:<19} {}", outcomes.join(", ")));
        }
    }
    for ((kind, code), message) in tally.unexpected.lock().unwrap_or_else(|e| e.into_inner()).iter()
    {
        report.figure(format!("first {code} of {kind}: {message}"));
    }
    let oks = tally.oks.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for (name, killed_at, serving_after) in &kills {
        let dependent: &[&str] = match *name {
            "identity" => &["RequestPin", "LoginWithPin", "ChangePin"],
            "claims" => &["SubmitClaim", "ListBenefits", "CreatePaymentBatch"],
            // Nothing waits on notify-svc: its callers' outboxes hold what it must send.
            "notify" => &[],
            _ => &["RequestPin", "LoginWithPin", "ChangePin", "SubmitClaim", "ListBenefits"],
        };
        let first_ok = oks
            .iter()
            .filter(|(kind, started, _)| dependent.contains(kind) && started > killed_at)
            .map(|(_, _, at)| at.duration_since(*killed_at))
            .min();
        report.figure(format!(
            "kill -9 {name:<8}: serving again after {} ms{}",
            serving_after.as_millis(),
            first_ok.map_or(String::new(), |d| format!(
                ", first OK of a call through it {} ms after the kill",
                d.as_millis()
            ))
        ));
    }

    let records =
        Records { data_dir: suite.data_dir(), postgres: suite.database_url().map(str::to_owned) };
    drained(&records, &mut report).await?;
    check_claims(&records, plan, &answers, &mut report).await?;
    check_deliveries(&records, &suite.data_dir(), &mut report).await?;
    check_pins(&records, &answers, &gateway, &mut report).await?;
    check_batches(&records, &answers, &mut report).await?;
    Ok(report)
}

/// Puts the run's citizens on the register and the registry, sets the ceiling, logs the
/// claimants in (simplified PIN from the SMS) and gives the changers a PIN of their own.
#[allow(clippy::type_complexity)]
async fn prepare(
    suite: &Suite,
    plan: &Plan,
    gateway: &Channel,
    bo_token: &str,
) -> anyhow::Result<(Vec<(String, String)>, Vec<id::RequestPinRequest>, Vec<(String, String)>)> {
    let total = plan.claimants + plan.pin_requests + plan.pin_changes;
    let records: Vec<id::ResidentRecord> = (0..total)
        .map(|n| {
            let form = bench::citizen(n);
            id::ResidentRecord {
                line: n as i64 + 2,
                fiscal_code: form.fiscal_code,
                personal_data: form.personal_data,
                residence: form.residence,
            }
        })
        .collect();
    crate::import::import_all(gateway.clone(), bo_token, &records).await?;
    let claimants: Vec<(u64, String)> =
        (0..plan.claimants).map(|n| (n, bench::citizen(n).fiscal_code)).collect();
    crate::clickday::import_registry(gateway.clone(), bo_token, &claimants).await?;
    let ceiling = cl::UpdateBenefitRequest {
        code: BENEFIT.into(),
        ceiling_cents: Some(plan.room * AMOUNT_CENTS),
        reason: "chaos crash: a ceiling the load exhausts".into(),
        ..Default::default()
    };
    ClaimsBackOfficeServiceClient::new(gateway.clone())
        .update_benefit(bearer(bo_token, ceiling)?)
        .await
        .context("setting the ceiling")?;

    let records =
        Records { data_dir: suite.data_dir(), postgres: suite.database_url().map(str::to_owned) };
    let mut identity = IdentityServiceClient::new(gateway.clone());
    let first_access: Vec<u64> = (plan.claimants + plan.pin_requests..total).collect();
    for n in (0..plan.claimants).chain(first_access.iter().copied()) {
        identity.request_pin(bench::citizen(n)).await.context("PIN request")?;
    }
    let mut sessions = Vec::new();
    for (_, cf) in &claimants {
        let (first, _) = halves(&records, &suite.data_dir(), cf, false).await?;
        let session = identity
            .login_with_pin(id::LoginWithPinRequest { fiscal_code: cf.clone(), pin: first })
            .await
            .context("simplified-PIN login")?
            .into_inner()
            .session
            .context("no session")?;
        sessions.push((cf.clone(), session.access_token));
    }
    let mut changers = Vec::new();
    for n in first_access {
        let cf = bench::citizen(n).fiscal_code;
        let (first, second) = halves(&records, &suite.data_dir(), &cf, true).await?;
        let own = format!("K{n:06}Q");
        identity
            .complete_first_access(id::CompleteFirstAccessRequest {
                fiscal_code: cf.clone(),
                initial_pin: format!("{first}{second}"),
                new_pin: own.clone(),
            })
            .await
            .context("first access")?;
        changers.push((cf, own));
    }
    let requesters = (plan.claimants..plan.claimants + plan.pin_requests).map(bench::citizen);
    Ok((sessions, requesters.collect(), changers))
}

/// The PIN halves of citizen `cf` as delivered (the SMS, and with `letter` the letter too).
async fn halves(
    records: &Records,
    data_dir: &std::path::Path,
    cf: &str,
    letter: bool,
) -> anyhow::Result<(String, String)> {
    let pool = records.pool("notify").await?;
    let sql = format!(
        "SELECT id, template FROM {} WHERE fiscal_code = $1 AND status IN ('SENT', 'DELIVERED') \
         AND template IN ('PIN_FIRST_HALF', 'PIN_SECOND_HALF_LETTER')",
        records.table("notify", "messages")
    );
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let mut sent = (None, None);
        for row in sqlx::query(&sql).bind(cf).fetch_all(&pool).await? {
            let (id, template): (String, String) = (row.try_get("id")?, row.try_get("template")?);
            if template == "PIN_FIRST_HALF" {
                sent.0 = Some(id);
            } else {
                sent.1 = Some(id);
            }
        }
        match sent {
            (Some(first), second) if !letter || second.is_some() => {
                let first = bench::delivered_sms_half(data_dir, &first)?;
                let second = match second {
                    Some(id) if letter => bench::spooled_letter_half(data_dir, &id)?,
                    _ => String::new(),
                };
                return Ok((first, second));
            }
            _ if Instant::now() > until => anyhow::bail!("no PIN delivered within 60 s"),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Claimant `cf`'s claim: half of them paid in cash at a post office (approved at once, so that
/// the back office has payments to batch), the others by bank transfer (left for review).
fn crash_claim(cf: &str) -> cl::SubmitClaimRequest {
    let mut form = claim(cf);
    if cf.bytes().map(u32::from).sum::<u32>() % 2 == 0 {
        let cash = cl::payment::Method::PostOfficeCash(cl::PostOfficeCash::default());
        form.payment = Some(cl::Payment { method: Some(cash) });
    }
    form
}

/// Files `cf`'s claim (always the same request and key) until the suite answers it.
async fn submit_settled(
    tally: &Tally,
    kind: &'static str,
    gateway: &Channel,
    cf: &str,
    token: &str,
) -> Result<tonic::Response<cl::SubmitClaimResponse>, tonic::Status> {
    let claims = ClaimsServiceClient::new(gateway.clone());
    tally
        .settle(kind, || {
            let request = authorized(token, crash_claim(cf));
            let mut claims = claims.clone();
            async move { claims.submit_claim(request?).await }
        })
        .await
}

async fn file_claim(tally: &Tally, answers: &Answers, gateway: Channel, cf: &str, token: &str) {
    let answer = submit_settled(tally, "SubmitClaim", &gateway, cf, token).await;
    let outcome = match answer {
        Ok(reply) => Ok(reply.into_inner().receipt.map(|r| r.claim_id).into_iter().collect()),
        Err(status) => Err((status.code(), status.message().to_owned())),
    };
    answers.claims.lock().unwrap_or_else(|e| e.into_inner()).insert(cf.to_owned(), outcome);
}

/// A citizen with a PIN of their own: logs in now and then, and once (after `after`) changes
/// the PIN, retrying an ambiguous failure only when the new PIN does not work yet.
async fn logins_and_a_change(
    tally: &Tally,
    answers: &Answers,
    gateway: Channel,
    cf: &str,
    pin: &str,
    after: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut identity = IdentityServiceClient::new(gateway);
    let new_pin = format!("{}Z", &pin[..pin.len() - 1]);
    let login = |pin: &str| id::LoginWithPinRequest { fiscal_code: cf.into(), pin: pin.into() };
    let change_at = Instant::now() + after;
    let mut current = pin.to_owned();
    let mut session: Option<String> = None;
    let mut changed = false;
    while !stop.is_cancelled() {
        if let (false, Some(token)) = (changed, session.as_deref()) {
            if Instant::now() >= change_at {
                if !change_pin(tally, &mut identity, cf, token, pin, &new_pin).await {
                    return;
                }
                changed = true;
                current = new_pin.clone();
                let done = (cf.to_owned(), pin.to_owned(), new_pin.clone());
                answers.pins_changed.lock().unwrap_or_else(|e| e.into_inner()).push(done);
            }
        }
        let started = Instant::now();
        let answer = identity.login_with_pin(timed(login(&current))).await;
        tally.count("LoginWithPin", started, &answer);
        if let Ok(reply) = answer {
            session = reply.into_inner().session.map(|s| s.access_token);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Changes `cf`'s PIN from `old` to `new` in session `token`; after an ambiguous failure, tries
/// again only if the new PIN does not log in yet. Whether the change was acknowledged.
async fn change_pin(
    tally: &Tally,
    identity: &mut IdentityServiceClient<Channel>,
    cf: &str,
    token: &str,
    old: &str,
    new: &str,
) -> bool {
    let change = id::ChangePinRequest {
        fiscal_code: cf.into(),
        current_pin: old.into(),
        new_pin: new.into(),
    };
    loop {
        let started = Instant::now();
        let answer = match authorized(token, change.clone()) {
            Ok(request) => identity.change_pin(request).await,
            Err(e) => Err(e),
        };
        tally.count("ChangePin", started, &answer);
        match answer {
            Ok(_) => return true,
            Err(s) if transient(s.code()) => {
                // Did it take effect before the answer was lost? The new PIN says.
                tokio::time::sleep(Duration::from_millis(300)).await;
                let probe = tally
                    .settle("LoginWithPin new?", || {
                        let mut identity = identity.clone();
                        let probe =
                            id::LoginWithPinRequest { fiscal_code: cf.into(), pin: new.into() };
                        async move { identity.login_with_pin(timed(probe)).await }
                    })
                    .await;
                if probe.is_ok() {
                    return true;
                }
            }
            Err(_) => return false,
        }
    }
}

/// A reader of the catalogue, as every citizen's portal page makes: cheap calls through the
/// gateway to claims-svc, all along.
async fn catalogue_reads(
    tally: &Tally,
    gateway: Channel,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut claims = ClaimsServiceClient::new(gateway);
    while !stop.is_cancelled() {
        let started = Instant::now();
        let answer = claims.list_benefits(timed(cl::ListBenefitsRequest {})).await;
        tally.count("ListBenefits", started, &answer);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The back office: a payment batch of a few claims now and then, each confirmed.
async fn payment_batches(
    tally: &Tally,
    answers: &Answers,
    gateway: Channel,
    token: &str,
    stop: tokio_util::sync::CancellationToken,
) {
    let bo = ClaimsBackOfficeServiceClient::new(gateway);
    while !stop.is_cancelled() {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let created = tally
            .settle("CreatePaymentBatch", || {
                let mut bo = bo.clone();
                let request = authorized(
                    token,
                    cl::CreatePaymentBatchRequest { max_claims: 5, ..Default::default() },
                );
                async move { bo.create_payment_batch(request?).await }
            })
            .await;
        let Ok(created) = created else { continue };
        let batch_id = created.into_inner().batch_id;
        let confirmed = tally
            .settle("ConfirmPaymentBatch", || {
                let mut bo = bo.clone();
                let request = authorized(
                    token,
                    cl::ConfirmPaymentBatchRequest { batch_id: batch_id.clone() },
                );
                async move { bo.confirm_payment_batch(request?).await }
            })
            .await;
        if confirmed.is_ok() {
            answers.batches_confirmed.lock().unwrap_or_else(|e| e.into_inner()).push(batch_id);
        }
    }
}

/// Waits until `name` runs again under a new process id and says SERVING; how long after the
/// kill (`None`: not within 90 s).
async fn back_again(suite: &Suite, name: &str, killed: u32) -> Option<Duration> {
    let killed_at = Instant::now();
    let addr = suite.addr(name);
    while killed_at.elapsed() < Duration::from_secs(90) {
        if suite.pid(name).is_some_and(|pid| pid != killed) && serving(addr).await {
            return Some(killed_at.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Each claimant files again with the same key, as a client that lost the answer would: an OK
/// must name the claim of the first OK, a refusal must stay a refusal.
async fn converge(
    tally: &Tally,
    answers: &Answers,
    gateway: &Channel,
    claimants: &[(String, String)],
    report: &mut Report,
) {
    let mut converged = 0;
    for (cf, token) in claimants {
        let again = submit_settled(tally, "SubmitClaim retry", gateway, cf, token).await;
        let mut all = answers.claims.lock().unwrap_or_else(|e| e.into_inner());
        match (all.get_mut(cf), again) {
            (Some(Ok(ids)), Ok(reply)) => {
                let id = reply.into_inner().receipt.map(|r| r.claim_id).unwrap_or_default();
                if ids.first() == Some(&id) {
                    converged += 1;
                } else {
                    report.violation(format!("a retry of {cf}'s claim got {id}, not {ids:?}"));
                }
                ids.push(id);
            }
            (Some(Err((code, _))), Err(status))
                if !transient(*code) && !transient(status.code()) =>
            {
                converged += 1
            }
            // Never answered before the client gave up: the retry's answer is the answer.
            (Some(first), Ok(reply)) if first.as_ref().is_err_and(|(code, _)| transient(*code)) => {
                let id = reply.into_inner().receipt.map(|r| r.claim_id).unwrap_or_default();
                *first = Ok(vec![id]);
                converged += 1;
            }
            (first, again) => report.violation(format!(
                "{cf}'s claim: first {first:?}, a retry with the same key {:?}",
                again.map(|r| r.into_inner().receipt.map(|r| r.claim_id))
            )),
        }
    }
    report
        .figure(format!("retries with the same key converged: {converged} of {}", claimants.len()));
}

/// Waits until every outbox row has been handed to notify-svc and notify-svc has nothing left
/// to send.
async fn drained(records: &Records, report: &mut Report) -> anyhow::Result<()> {
    let until = Instant::now() + Duration::from_secs(120);
    loop {
        let identity = records.count("identity", "outbox", "done_at IS NULL").await?;
        let claims = records.count("claims", "outbox", "done_at IS NULL").await?;
        let notify = records.count("notify", "messages", "status IN ('QUEUED', 'SENDING')").await?;
        if identity + claims + notify == 0 {
            return Ok(());
        }
        if Instant::now() > until {
            report.violation(format!(
                "not drained after 120 s: {identity} identity and {claims} claims outbox rows, \
                 {notify} notify messages"
            ));
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn check_claims(
    records: &Records,
    plan: &Plan,
    answers: &Answers,
    report: &mut Report,
) -> anyhow::Result<()> {
    let pool = records.pool("claims").await?;
    let sql =
        format!("SELECT id, fiscal_code, amount_cents FROM {}", records.table("claims", "claims"));
    let mut stored: HashMap<String, Vec<(String, i64)>> = HashMap::new();
    for row in sqlx::query(&sql).fetch_all(&pool).await? {
        let cf: String = row.try_get("fiscal_code")?;
        stored.entry(cf).or_default().push((row.try_get("id")?, row.try_get("amount_cents")?));
    }
    let answers = answers.claims.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut accepted = 0;
    for (cf, answer) in &answers {
        let held = stored.get(cf).cloned().unwrap_or_default();
        match answer {
            Ok(ids) => {
                accepted += 1;
                if held.len() != 1 || held.first().map(|(id, _)| id) != ids.first() {
                    report.violation(format!("{cf} was answered {ids:?}; stored {held:?}"));
                }
            }
            Err((code, refusal)) if !held.is_empty() => report.violation(format!(
                "{cf} was refused ({code:?} {refusal}) yet a claim is stored: {held:?}"
            )),
            Err(_) => {}
        }
    }
    let strangers = stored.keys().filter(|cf| !answers.contains_key(*cf)).count();
    if strangers > 0 {
        report.violation(format!("{strangers} claims of citizens who filed none"));
    }
    let sql = format!(
        "SELECT ceiling_cents, reserved_cents FROM {} WHERE code = $1",
        records.table("claims", "benefits")
    );
    let row = sqlx::query(&sql).bind(BENEFIT).fetch_one(&pool).await?;
    let (ceiling, reserved): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
    let held: i64 = stored.values().flatten().map(|(_, cents)| cents).sum();
    if reserved != held || reserved > ceiling || ceiling != plan.room * AMOUNT_CENTS {
        report.violation(format!(
            "ceiling {ceiling} cents, reserved {reserved}, claims stored hold {held}"
        ));
    }
    let eligible = answers.keys().count() as i64 - plan.claimants as i64 / 10;
    if eligible > plan.room && reserved != ceiling {
        report.violation(format!(
            "more eligible claimants than room, yet {reserved} of {ceiling} reserved"
        ));
    }
    // One receipt per claim.
    let sql = format!(
        "SELECT fiscal_code, COUNT(*) FROM {} WHERE template = 'CLAIM_RECEIPT' GROUP BY fiscal_code",
        records.table("claims", "outbox")
    );
    let mut receipts = 0;
    for row in sqlx::query(&sql).fetch_all(&pool).await? {
        let (cf, n): (String, i64) = (row.try_get(0)?, row.try_get(1)?);
        receipts += 1;
        if n != 1 || !stored.contains_key(&cf) {
            report
                .violation(format!("{n} receipts for {cf} (claims stored: {:?})", stored.get(&cf)));
        }
    }
    if receipts != stored.len() {
        report.violation(format!("{} claims stored, {receipts} with a receipt", stored.len()));
    }
    report.figure(format!(
        "claims: {accepted} acknowledged, {} refused, {} stored each with one receipt; \
         ceiling {ceiling} cents, reserved {reserved} = the claims' {held}",
        answers.len() - accepted,
        stored.len()
    ));
    Ok(())
}

/// How many times each message id appears in the local sinks: SMS lines, letters in the print
/// spool's manifest, email files (one file per id: present or not).
fn sink_counts(data_dir: &std::path::Path) -> HashMap<(String, String), usize> {
    let mut counts: HashMap<(String, String), usize> = HashMap::new();
    for (channel, file) in [("SMS", "outbox/sms.jsonl"), ("POST", "spool/manifest.jsonl")] {
        let text = std::fs::read_to_string(data_dir.join(file)).unwrap_or_default();
        for line in text.lines() {
            let Ok(json) = serde_json::from_str::<serde_json::Value>(line) else { continue };
            if let Some(id) = json["message_id"].as_str() {
                *counts.entry((channel.to_owned(), id.to_owned())).or_default() += 1;
            }
        }
    }
    for channel in ["EMAIL", "PEC"] {
        let dir = data_dir.join("outbox").join(channel.to_lowercase());
        for file in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = file.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(".eml") {
                *counts.entry((channel.to_owned(), id.to_owned())).or_default() += 1;
            }
        }
    }
    counts
}

/// Every outbox row of identity and claims reached notify-svc as one message of its own, sent,
/// and seen exactly once by its sink; notify holds no message that no row asked for.
async fn check_deliveries(
    records: &Records,
    data_dir: &std::path::Path,
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut asked: HashMap<String, String> = HashMap::new();
    let mut rows = 0;
    for service in ["identity", "claims"] {
        let pool = records.pool(service).await?;
        let sql = format!("SELECT id, message_id FROM {}", records.table(service, "outbox"));
        for row in sqlx::query(&sql).fetch_all(&pool).await? {
            rows += 1;
            let (row_id, message): (String, Option<String>) = (row.try_get(0)?, row.try_get(1)?);
            match message {
                Some(message) => {
                    if let Some(other) = asked.insert(message.clone(), row_id.clone()) {
                        report.violation(format!(
                            "rows {other} and {row_id} share message {message}"
                        ));
                    }
                }
                None => report.violation(format!("{service} outbox row {row_id} has no message")),
            }
        }
    }
    let pool = records.pool("notify").await?;
    let sql = format!("SELECT id, channel, status FROM {}", records.table("notify", "messages"));
    let sinks = sink_counts(data_dir);
    let mut messages = 0;
    for row in sqlx::query(&sql).fetch_all(&pool).await? {
        messages += 1;
        let (id, channel, status): (String, String, String) =
            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        if !asked.contains_key(&id) {
            report.violation(format!("notify message {id} ({channel}) answers no outbox row"));
        }
        let seen = sinks.get(&(channel.clone(), id.clone())).copied().unwrap_or(0);
        if !matches!(status.as_str(), "SENT" | "DELIVERED") || seen != 1 {
            report.violation(format!(
                "message {id} ({channel}) is {status}, in its sink {seen} times"
            ));
        }
    }
    if messages != asked.len() {
        report.violation(format!("{} outbox messages, {messages} in notify-svc", asked.len()));
    }
    report.figure(format!(
        "deliveries: {rows} outbox rows, {messages} messages, each sent and in its sink once"
    ));
    Ok(())
}

/// Every credential has one issued request with both halves sent; every acknowledged PIN
/// request has its credential; every acknowledged change is the PIN that works now.
async fn check_pins(
    records: &Records,
    answers: &Answers,
    gateway: &Channel,
    report: &mut Report,
) -> anyhow::Result<()> {
    let pool = records.pool("identity").await?;
    let sql = format!(
        "SELECT fiscal_code, first_half_message, second_half_message FROM {} WHERE outcome = 'ISSUED'",
        records.table("identity", "pin_requests")
    );
    let mut issued: HashMap<String, usize> = HashMap::new();
    for row in sqlx::query(&sql).fetch_all(&pool).await? {
        let cf: String = row.try_get(0)?;
        let (first, second): (Option<String>, Option<String>) = (row.try_get(1)?, row.try_get(2)?);
        if first.is_none() || second.is_none() {
            report.violation(format!("{cf}'s issued PIN request lacks a half's message"));
        }
        *issued.entry(cf).or_default() += 1;
    }
    let sql = format!("SELECT fiscal_code FROM {}", records.table("identity", "citizens"));
    let credentials: HashSet<String> =
        sqlx::query_scalar(&sql).fetch_all(&pool).await?.into_iter().collect();
    for cf in &credentials {
        if issued.get(cf) != Some(&1) {
            report.violation(format!(
                "{cf} has a credential and {:?} issued requests",
                issued.get(cf)
            ));
        }
    }
    let requested = answers.pins_requested.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for cf in &requested {
        if !credentials.contains(cf) {
            report.violation(format!("{cf}'s PIN request was acknowledged but left no credential"));
        }
    }
    let changed = answers.pins_changed.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut identity = IdentityServiceClient::new(gateway.clone());
    for (cf, old, new) in &changed {
        let login =
            |pin: &str| id::LoginWithPinRequest { fiscal_code: cf.clone(), pin: pin.into() };
        if identity.login_with_pin(timed(login(new))).await.is_err() {
            report.violation(format!("{cf}'s acknowledged PIN change is not in effect"));
        }
        if identity.login_with_pin(timed(login(old))).await.is_ok() {
            report.violation(format!("{cf}'s old PIN still logs in after its change"));
        }
    }
    report.figure(format!(
        "PINs: {} credentials each with one issued request and both halves; {} requests and {} \
         changes acknowledged, all in effect",
        credentials.len(),
        requested.len(),
        changed.len()
    ));
    Ok(())
}

/// Each batch holds what it says (its total is its claims'), and each confirmed one is marked so.
async fn check_batches(
    records: &Records,
    answers: &Answers,
    report: &mut Report,
) -> anyhow::Result<()> {
    let pool = records.pool("claims").await?;
    let sql = format!(
        "SELECT b.id, b.total_cents, b.transfers + b.cash, b.confirmed_at, \
         (SELECT CAST(COALESCE(SUM(c.amount_cents), 0) AS BIGINT) FROM {claims} c \
         WHERE c.payment_batch_id = b.id), \
         (SELECT COUNT(*) FROM {claims} c WHERE c.payment_batch_id = b.id) FROM {batches} b",
        claims = records.table("claims", "claims"),
        batches = records.table("claims", "payment_batches"),
    );
    let confirmed = answers.batches_confirmed.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let (mut batches, mut paid) = (0, 0);
    for row in sqlx::query(&sql).fetch_all(&pool).await? {
        batches += 1;
        let id: String = row.try_get(0)?;
        let (total, count, at): (i64, i64, Option<i64>) =
            (row.try_get(1)?, row.try_get(2)?, row.try_get(3)?);
        let (sum, held): (i64, i64) = (row.try_get(4)?, row.try_get(5)?);
        if total != sum || count != held {
            report.violation(format!(
                "batch {id}: {count} claims {total} cents; holds {held}, {sum}"
            ));
        }
        if confirmed.contains(&id) && at.is_none() {
            report.violation(format!("batch {id} was confirmed yet is not marked so"));
        }
        paid += held;
    }
    report.figure(format!(
        "payment batches: {batches} made ({} confirmed), {paid} claims in them, totals exact",
        confirmed.len()
    ));
    Ok(())
}
